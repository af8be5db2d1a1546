"""CPU of `scalable watch` per refresh while a run's tasks.jsonl grows to N lines.

A run directory is made by hand (run.json `running`, this process its owner) and N task
lines (submitted, started, completed: N/3 tasks, real lines' size) are appended over
about `seconds`, in a batch every 0.2 s as the recorder flushes, together with a
resource sample per worker each second. `scalable watch --interval 1` follows it with
stdout a pipe (plain lines) and ends when run.json says the run completed. Prints the
watcher's CPU seconds in total and per refresh, and the files' size: a refresh reads
only what was appended since the last, so its cost follows the rate of lines, not the
size of the files.

    python benchmarks/watch.py              # N = 100,000 over 30 s
    python benchmarks/watch.py 300000 60
"""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psutil

from scalable_otel.rundir import RunDirectory, iso, new_run_id, run_json

FLUSH_S = 0.2


def _meta(run_id: str, status: str, started: float, ended: float | None = None) -> dict:
    return run_json(
        run_id=run_id, project="bench", status=status, started=started, ended=ended,
        target="local", provider="local", host=socket.gethostname(), pid=os.getpid(),
        process_start_time=psutil.Process().create_time(), manifest_hash="sha256:0",
        trace_id="0" * 32, exporters={}, settings={}, versions={},
    )  # fmt: skip


def _task_lines(run_id: str, i: int, now: float) -> bytes:
    base = {"schema_version": 1, "run_id": run_id, "task": f"step{i % 4}", "key": f"k-{i}"}
    stamp = iso(now)
    ids = {"trace_id": "0" * 32, "parent_span_id": "1" * 16}
    lines = [
        {**base, "timestamp": stamp, "event": "task_submitted", "args": {"i": i},
         "dependencies": [], "reason": None, "span_id": f"{i:016x}", **ids},
        {**base, "timestamp": stamp, "event": "task_started", "worker": "tcp://127.0.0.1:1",
         "attempt": 1, "reason": None, "queue_wait_s": 0.01, "trace_id": "0" * 32,
         "span_id": f"{i + 10**9:016x}", "parent_span_id": f"{i:016x}"},
        {**base, "timestamp": stamp, "event": "task_completed", "args": {"i": i},
         "worker": "tcp://127.0.0.1:1", "attempt": 1, "reason": None, "duration_s": 0.1,
         "queue_wait_s": 0.01, "submitted_at": stamp, "nbytes": 24, "result_type": "int",
         "span_id": f"{i:016x}", **ids},
    ]  # fmt: skip
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def main(n: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as root:
        run_id = new_run_id("bench")
        run = RunDirectory.create(Path(root), run_id)
        started = time.time()
        run.write_run_json(_meta(run_id, "running", started))
        watcher = subprocess.Popen(
            [sys.executable, "-m", "scalable_otel.cli", "watch", run_id, "--interval", "1"]
            + ["--runs-dir", root],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        lines: list[str] = []
        baseline: list[float] = []

        def read() -> None:
            for raw in watcher.stdout:
                if not baseline:  # the first refresh printed: imports and start are done
                    cpu = psutil.Process(watcher.pid).cpu_times()
                    baseline.append(cpu.user + cpu.system)
                lines.append(raw.decode())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        while not baseline:
            time.sleep(0.05)
        started = time.time()
        tasks = n // 3
        batches = max(1, int(seconds / FLUSH_S))
        per_batch = -(-tasks // batches)
        i, sampled = 0, 0.0
        with (
            open(run.file("tasks.jsonl"), "ab") as out,
            open(run.file("resources.jsonl"), "ab") as res,
        ):
            while i < tasks:
                now = time.time()
                out.write(
                    b"".join(
                        _task_lines(run_id, j, now) for j in range(i, min(tasks, i + per_batch))
                    )
                )
                out.flush()
                i += per_batch
                if now - sampled >= 1.0:
                    sampled = now
                    sample = {
                        "schema_version": 1, "timestamp": iso(now), "run_id": run_id,
                        "event": "resource_sample", "worker": "tcp://127.0.0.1:1",
                        "worker_name": "0", "cpu_percent": 99.0, "memory_bytes": 2**27,
                    }  # fmt: skip
                    res.write(orjson.dumps(sample) + b"\n")
                    res.flush()
                time.sleep(FLUSH_S)
        size = run.file("tasks.jsonl").stat().st_size
        ended = time.time()
        usage = psutil.Process(watcher.pid)
        run.write_run_json(_meta(run_id, "completed", started, ended))
        cpu = usage.cpu_times()
        watcher_cpu = cpu.user + cpu.system
        watcher.wait(timeout=120)
        reader.join(timeout=10)
        printed = sum(1 for line in lines if "submitted so far" in line)
        elapsed = ended - started
        following = watcher_cpu - baseline[0]
        print(f"{n:,} task lines ({size / 2**20:.1f} MiB) appended over {elapsed:.1f} s")
        print(f"watcher CPU to start and print its first line: {baseline[0]:.2f} s")
        print(f"watcher CPU while following: {following:.2f} s, {elapsed:.0f} refreshes")
        print(
            f"CPU per refresh: {1000 * following / max(elapsed, 1):.1f} ms; lines printed {printed}"
        )


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
        float(sys.argv[2]) if len(sys.argv) > 2 else 30.0,
    )
