"""Entry point of a session's telemetry process: `python -m scalable_otel._recorder_main FD`."""

import os
import signal
import sys
from multiprocessing.connection import Connection

from .recording import serve

if __name__ == "__main__":
    # Ctrl-C, and Slurm's SIGTERM to every process of a job, are for the client, which
    # closes us when its run ends; if it dies instead, we see the end of our pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        # A flight recorder must not slow the flight: when the machine is busy the
        # workflow's processes come first, and the recorder catches up when they wait.
        os.nice(int(os.environ.get("SCALABLE_RECORDER_NICE", "10")))
    except (OSError, ValueError):
        pass
    serve(Connection(int(sys.argv[1])))
    # Everything is written and every exporter shut down by now: the interpreter's own
    # teardown (tens of milliseconds, more on a busy host) would only delay the close
    # of the client waiting for this process to end.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
