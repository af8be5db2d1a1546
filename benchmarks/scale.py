"""Scale: 100,000 short tasks through a session, against plain Dask in the same run.

Three figures, each beside a baseline measured in this same run:

1. Driver memory. The tasks go in batches (default 10 of 10,000 no-op tasks, each
   batch submitted, gathered and released, as a long ensemble does). After each
   batch the driver's RSS is read (after a garbage collection), for plain Dask and
   for the instrumented session; the growth per 10,000 tasks is the least-squares
   slope once warm (from the second batch on). Target: within 1 MB per 10,000 tasks
   of plain Dask's. The telemetry process's RSS is printed too.
2. End-to-end overhead: the wall time of each batch, instrumented over plain, on
   fresh LocalClusters of 2 worker processes with 1 thread each; the order of the two
   modes alternates between rounds. The median of the batch ratios is printed.
   The session's close after the last batch is timed, split by part (the last records
   from workers and scheduler, Dask's close, the telemetry process's end, plan.json,
   run.json, the columnar copy: `ScalableSession.close_split`), beside plain Dask's
   close. Target: at most 2 s.
3. JSONL exporter throughput. The instrumented run's own tasks.jsonl lines are
   written again (a) by a bare loop appending `orjson.dumps(line) + b"\\n"` to a
   buffered file, the baseline, and (b) through the SDK's `JsonlWriter` (the writer
   the run directory uses: serialization, buffering, flush thread, O_APPEND
   writes), and (c) from the spans: the run-directory span processor turning
   finished task spans into lines and writing them. Target: (b) at least half the
   rate of (a).

    python benchmarks/scale.py                 # 100,000 tasks, about 15 minutes here
    python benchmarks/scale.py --tasks 20000   # a shorter run
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import MB, noop, plain_client, slope_per_10k  # noqa: E402


def batches(client_or_session, n_tasks: int, batch: int):
    """Yield (tasks done, seconds of this batch) after each batch; futures are released."""
    done = 0
    while done < n_tasks:
        size = min(batch, n_tasks - done)
        t0 = time.perf_counter()
        futures = client_or_session.map(noop, range(done, done + size), pure=False)
        results = client_or_session.gather(futures)
        elapsed = time.perf_counter() - t0
        assert len(results) == size
        del futures, results
        done += size
        yield done, elapsed


def rss_after_gc() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def run_plain(n_tasks: int, batch: int) -> dict:
    with plain_client() as client:
        result = measure(client, n_tasks, batch, label="plain")
        t0 = time.perf_counter()
    result["close_s"] = time.perf_counter() - t0  # the client's and the cluster's close
    return result


def run_instrumented(n_tasks: int, batch: int, runs_dir: Path) -> dict:
    from scalable_otel import ScalableSession

    with ScalableSession(
        target="local", n_workers=2, threads_per_worker=1, project="scale", runs_dir=runs_dir
    ) as session:
        session.client.wait_for_workers(2)
        process = getattr(session._recording, "_process", None)
        telemetry = psutil.Process(process.pid) if process else None
        result = measure(session, n_tasks, batch, label="instrumented", telemetry=telemetry)
        t0 = time.perf_counter()
    result["close_s"] = time.perf_counter() - t0
    result["close_split"] = dict(session.close_split)
    result["run_dir"] = session.run_dir
    return result


def measure(mapper, n_tasks: int, batch: int, label: str, telemetry=None) -> dict:
    points, times, telemetry_rss = [(0, rss_after_gc())], [], []
    for done, elapsed in batches(mapper, n_tasks, batch):
        rss = rss_after_gc()
        points.append((done, rss))
        times.append(elapsed)
        extra = ""
        if telemetry is not None:
            telemetry_rss.append(telemetry.memory_info().rss)
            extra = f"  telemetry process {telemetry_rss[-1] / MB:6.1f} MB"
        print(
            f"  {label:12s} {done:7d} tasks  batch {elapsed:6.2f} s  "
            f"({1e3 * elapsed / batch:.2f} ms/task)  driver {rss / MB:6.1f} MB{extra}",
            flush=True,
        )
    return {"points": points, "times": times, "telemetry_rss": telemetry_rss}


def warm_slope(points: list[tuple[int, int]]) -> float | None:
    """MB per 10,000 tasks from the second batch on (the first pays imports and caches)."""
    return slope_per_10k(points[2:] if len(points) > 3 else points)


# --- JSONL exporter throughput -----------------------------------------------------------
def read_lines(path: Path, limit: int) -> list[dict]:
    lines = []
    with open(path, "rb") as f:
        for raw in f:
            lines.append(orjson.loads(raw))
            if len(lines) >= limit:
                break
    return lines


def bare_append(lines: list[dict], folder: Path) -> float:
    """Lines per second of the baseline: orjson.dumps and a buffered append, nothing else."""
    path = folder / "bare.jsonl"
    t0 = time.perf_counter()
    with open(path, "ab") as f:
        for line in lines:
            f.write(orjson.dumps(line) + b"\n")
    return len(lines) / (time.perf_counter() - t0)


def writer_append(lines: list[dict], folder: Path) -> float:
    """Lines per second through the run directory's JsonlWriter, until all are on disk."""
    from scalable_otel.exporters.jsonl import JsonlWriter
    from scalable_otel.rundir import TASKS

    writer_dir = folder / "writer"
    writer_dir.mkdir()
    t0 = time.perf_counter()
    writer = JsonlWriter(writer_dir, flush_interval=0.2)
    for line in lines:
        writer.append(TASKS, line)
    writer.close()
    rate = len(lines) / (time.perf_counter() - t0)
    assert writer.written == len(lines), (writer.written, len(lines))
    return rate


def spans_to_lines(n_tasks: int, folder: Path) -> tuple[float, int]:
    """Lines per second from finished task spans through RunDirectorySpanProcessor."""
    from opentelemetry.sdk.trace import TracerProvider

    from scalable_otel import semconv as sc
    from scalable_otel.exporters.jsonl import JsonlWriter, RunDirectorySpanProcessor

    class Keep:
        def __init__(self):
            self.spans = []

        def on_start(self, span, parent_context=None):
            pass

        def on_end(self, span):
            self.spans.append(span)

        def _on_ending(self, span):
            pass

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=30000):
            return True

    keep = Keep()
    provider = TracerProvider()
    provider.add_span_processor(keep)
    tracer = provider.get_tracer("scale")
    for i in range(n_tasks):
        key = f"noop-{i:08x}"
        span = tracer.start_span(
            "noop",
            attributes={
                sc.KIND: sc.KIND_TASK,
                sc.TASK_NAME: "noop",
                sc.TASK_KEY: key,
                sc.TASK_ARGS: orjson.dumps({"i": i}).decode(),
            },
        )
        span.set_attributes(
            {sc.TASK_STATUS: sc.STATUS_COMPLETED, sc.TASK_DURATION: 0.001, sc.WORKER: "w"}
        )
        span.end()
    out = folder / "spans"
    out.mkdir()
    writer = JsonlWriter(out, flush_interval=0.2)
    processor = RunDirectorySpanProcessor(writer, "run-scale")
    t0 = time.perf_counter()
    for span in keep.spans:
        processor.on_start(span)
        processor.on_end(span)
    writer.close()
    elapsed = time.perf_counter() - t0
    return writer.written / elapsed, writer.written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument(
        "--order",
        choices=["plain-first", "instrumented-first"],
        default="plain-first",
        help="which mode runs first (run both orders on a noisy machine)",
    )
    args = parser.parse_args()
    print(
        f"{args.tasks} no-op tasks in batches of {args.batch}; LocalCluster of 2 worker "
        f"processes x 1 thread per mode; cpus {os.cpu_count()}",
        flush=True,
    )
    runs_root = Path(tempfile.mkdtemp(prefix="scalable-scale-"))

    modes = [("plain", lambda: run_plain(args.tasks, args.batch))]
    modes.append(("instrumented", lambda: run_instrumented(args.tasks, args.batch, runs_root)))
    if args.order == "instrumented-first":
        modes.reverse()
    results = {name: run() for name, run in modes}
    plain, instr = results["plain"], results["instrumented"]

    ratios = [i / p for p, i in zip(plain["times"], instr["times"])]
    total_ratio = sum(instr["times"]) / sum(plain["times"])
    gp, gi = warm_slope(plain["points"]), warm_slope(instr["points"])
    completed = 0
    with open(instr["run_dir"] / "tasks.jsonl", "rb") as f:
        for raw in f:
            completed += b'"event":"task_completed"' in raw
    print("\n== driver memory (RSS after gc, per 10,000 tasks once warm) ==")
    print(f"  plain Dask:   {gp:+.2f} MB / 10k tasks")
    print(f"  instrumented: {gi:+.2f} MB / 10k tasks")
    print(f"  difference:   {gi - gp:+.2f} MB / 10k tasks  (target: at most +1)")
    if instr["telemetry_rss"]:
        rss = instr["telemetry_rss"]
        print(
            f"  telemetry process: {rss[0] / MB:.1f} MB after the first batch, "
            f"{rss[-1] / MB:.1f} MB at the end"
        )
    print("\n== end-to-end overhead (wall time of each batch, instrumented / plain) ==")
    print(
        f"  median batch ratio {statistics.median(ratios):.3f} "
        f"(range {min(ratios):.3f}..{max(ratios):.3f}); whole run {total_ratio:.3f}; "
        f"plain {1e3 * sum(plain['times']) / args.tasks:.2f} ms/task"
    )
    print(
        f"  session close {instr['close_s']:.2f} s (target: at most 2); "
        f"task_completed lines {completed}/{args.tasks}"
    )
    split = instr["close_split"]
    print("  close split: " + ", ".join(f"{part} {s:.2f} s" for part, s in split.items()))
    print(f"  plain Dask's close (client and cluster): {plain['close_s']:.2f} s")
    print(f"  load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    print("\n== JSONL exporter throughput (lines per second, same lines, this run) ==")
    with tempfile.TemporaryDirectory(prefix="scalable-jsonl-") as folder:
        lines = read_lines(instr["run_dir"] / "tasks.jsonl", limit=3 * args.tasks)
        rates_bare, rates_writer = [], []
        for _ in range(3):  # alternated, median of 3
            rates_bare.append(bare_append(lines, Path(tempfile.mkdtemp(dir=folder))))
            rates_writer.append(writer_append(lines, Path(tempfile.mkdtemp(dir=folder))))
        bare, writer = statistics.median(rates_bare), statistics.median(rates_writer)
        from_spans, n_span_lines = spans_to_lines(min(args.tasks, 50_000), Path(folder))
    print(f"  bare orjson append loop: {bare:,.0f} lines/s ({len(lines):,} lines)")
    print(
        f"  JsonlWriter:             {writer:,.0f} lines/s  ratio {writer / bare:.2f} "
        "(target >= 0.5)"
    )
    print(
        f"  span processor + writer: {from_spans:,.0f} lines/s  ratio {from_spans / bare:.2f} "
        f"({n_span_lines:,} lines from finished task spans)"
    )
    return 0 if completed == args.tasks else 1


if __name__ == "__main__":
    sys.exit(main())
