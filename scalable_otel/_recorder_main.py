"""Entry point of a session's telemetry process: `python -m scalable_otel._recorder_main FD`."""

import os
import signal
import sys
from multiprocessing.connection import Connection

from .recording import serve

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the client, which closes us
    try:
        # A flight recorder must not slow the flight: when the machine is busy the
        # workflow's processes come first, and the recorder catches up when they wait.
        os.nice(int(os.environ.get("SCALABLE_RECORDER_NICE", "10")))
    except (OSError, ValueError):
        pass
    serve(Connection(int(sys.argv[1])))
