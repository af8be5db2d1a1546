"""CPU per task of the telemetry process, on a replayed record stream.

The session's telemetry process receives the plugins' records in pickled batches and
turns them into spans, metrics, log records, the run directory's JSONL files and
traces.otlp.jsonl. Its CPU time on a fixed stream is far steadier than the wall time of
a cluster on a shared machine, so this benchmark:

1. captures, once, the messages the telemetry process of a real run receives: a
   session of `--tasks` no-op tasks (default 100,000, in batches of 10,000 submitted,
   gathered and released) on a LocalCluster of 2 worker processes, every message sent
   to the telemetry process written to `--capture` as it goes (kept: later runs replay
   it; `--recapture` makes a new one);
2. replays it in a fresh process for each stage set below, into a new run directory,
   and prints the process's CPU time (every thread) per task:

   decode   unpickling the batches only;
   spans    + the recorder and its spans (no span processor, no run-directory line);
   jsonl    + the run directory's JSONL files (tasks, resources, workers, ...);
   otlp     + traces.otlp.jsonl: the whole pipeline, as the telemetry process builds it
            by default (no metric reader: metrics are recorded only when one collects
            them, as with OTLP metrics or a Prometheus endpoint);
   metrics  printed apart: the whole pipeline with a metric reader, minus without.

   Each stage's cost is its set's CPU minus the set before it; the medians of `--rounds`
   replays are printed. The full replay's run directory is checked: one task_completed
   line per task.

    python benchmarks/recorder.py                     # capture once (a few minutes), replay
    python benchmarks/recorder.py --tasks 20000       # a smaller stream
    python benchmarks/recorder.py --profile otlp      # cProfile of one full replay, top 40
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("decode", "spans", "jsonl", "otlp")
EXTRA = ("metrics",)  # beside the whole pipeline, not in it by default
HERE = Path(__file__).resolve().parent
DEFAULT_CAPTURE = HERE / ".cache" / "records-{tasks}.pickle"


def noop(i):
    return i


# --- capture -------------------------------------------------------------------------------
def capture(path: Path, tasks: int, batch: int) -> None:
    """Run a session of `tasks` no-op tasks; write every message its telemetry process
    gets to `path` (length-prefixed pickles: the bytes the process unpickles)."""
    from scalable_otel import ScalableSession
    from scalable_otel.recording import ChildProcessRecording

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    out = open(partial, "wb")
    original = ChildProcessRecording._send

    def tee(self, message):
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(len(data).to_bytes(8, "little"))
        out.write(data)
        return original(self, message)

    ChildProcessRecording._send = tee
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as runs:
            session = ScalableSession(
                target="local",
                n_workers=2,
                threads_per_worker=1,
                project="bench",
                runs_dir=runs,
            )
            with session as s:
                s.client.wait_for_workers(2)
                done = 0
                while done < tasks:
                    size = min(batch, tasks - done)
                    futures = s.map(noop, range(done, done + size), pure=False)
                    assert len(s.gather(futures)) == size
                    del futures
                    done += size
                    print(f"  captured {done} tasks", file=sys.stderr)
    finally:
        ChildProcessRecording._send = original
        out.close()
    partial.replace(path)
    print(
        f"captured {tasks} tasks in {time.perf_counter() - t0:.0f} s: {path} "
        f"({path.stat().st_size / 2**20:.0f} MB)",
        file=sys.stderr,
    )


def messages(path: Path):
    """The captured messages, as bytes."""
    with open(path, "rb") as f:
        while header := f.read(8):
            yield f.read(int.from_bytes(header, "little"))


# --- replay (in a fresh process per stage set) ----------------------------------------------
class _NoLines:
    """Stands for the run directory's event writer in the stage sets before `jsonl`."""

    def write_event(self, *args) -> None:
        pass


def _recording(config, stage: str):
    """A RunRecording whose pipeline holds the stages up to `stage` only."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from scalable_otel.recording import RunRecording

    if stage == "metrics":  # the whole pipeline, with a reader that collects metrics
        return RunRecording(config, metric_readers=[InMemoryMetricReader()])
    run = RunRecording(config)
    if stage == "otlp":
        return run
    sink = run.recorder._spans
    sink.processors = [p for p in sink.processors if stage == "jsonl" and _writes_run_dir(p)]
    if stage == "spans":
        run.pipeline.events = _NoLines()
    return run


def _writes_run_dir(processor) -> bool:
    return type(processor).__module__.endswith("exporters.jsonl")


def replay(path: Path, stage: str, run_dir: Path, profile: bool = False) -> dict:
    """CPU seconds of replaying the capture through `stage`'s set; the run's summary."""
    from scalable_otel.recording import RunConfig, collect_less

    blobs = list(messages(path))
    start = pickle.loads(blobs[0])
    config = RunConfig(**start[1])
    config.run_dir = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = run = None
    if stage != "decode":
        run = _recording(config, stage)  # its start-up is not the run's
    collect_less()  # as the telemetry process does once its pipeline is built
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if run is None:
        for blob in blobs[1:]:
            pickle.loads(blob)
    else:
        for blob in blobs[1:]:
            message = pickle.loads(blob)
            if message[0] == "batch":
                run.batch(message[1], message[2])
            elif message[0] == "close":
                summary = run.finish(message[1], message[2])
        if summary is None:
            summary = run.finish(time.time(), None)
    if profiler:
        profiler.disable()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if profiler:
        import pstats

        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(40)
    return {"cpu_s": cpu, "wall_s": wall, "summary": summary}


def replay_in_child(path: Path, stage: str, profile: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, __file__, "--replay", stage, "--capture", str(path)]
        command += ["--run-dir", str(Path(tmp) / "run")]
        if profile:
            command.append("--profile-child")
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"replay of {stage} failed:\n{done.stderr}")
        if profile:
            print(done.stderr, file=sys.stderr)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if stage == "otlp":
            result["completed_lines"] = _completed_lines(Path(tmp) / "run" / "tasks.jsonl")
        return result


def _completed_lines(tasks: Path) -> int:
    with open(tasks, "rb") as f:
        return sum(b'"event":"task_completed"' in line for line in f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--capture", type=Path, default=None)
    parser.add_argument("--recapture", action="store_true")
    parser.add_argument("--profile", choices=STAGES + EXTRA, default=None)
    parser.add_argument("--replay", choices=STAGES + EXTRA, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = args.capture or Path(str(DEFAULT_CAPTURE).format(tasks=args.tasks))

    if args.replay:  # the child
        result = replay(path, args.replay, args.run_dir, profile=args.profile_child)
        result["summary"] = {
            k: v for k, v in (result["summary"] or {}).items() if k.startswith("tasks_")
        }
        print(json.dumps(result))
        return

    if args.recapture or not path.exists():
        capture(path, args.tasks, args.batch)
    if args.profile:
        replay_in_child(path, args.profile, profile=True)
        return

    cpu: dict[str, list[float]] = {stage: [] for stage in STAGES + EXTRA}
    summary = None
    for _ in range(args.rounds):
        for stage in STAGES + EXTRA:
            result = replay_in_child(path, stage)
            cpu[stage].append(result["cpu_s"])
            if stage == "otlp":
                summary = result["summary"]
                completed = result["completed_lines"]
    tasks = summary["tasks_submitted"]
    if completed != summary["tasks_completed"] or completed != tasks:
        raise SystemExit(
            f"the replayed run is wrong: {completed} task_completed lines, summary {summary}"
        )
    print(
        f"replayed {tasks} tasks ({path.name}), {args.rounds} rounds, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'stage':<10}{'us/task':>10}{'cumulative':>12}{'range (cumulative)':>22}")

    def per_task(stage):
        values = [c / tasks * 1e6 for c in cpu[stage]]
        return statistics.median(values), min(values), max(values)

    previous = 0.0
    for stage in STAGES:
        median, low, high = per_task(stage)
        print(f"{stage:<10}{median - previous:>10.1f}{median:>12.1f}{low:>12.1f}..{high:<8.1f}")
        previous = median
    total = previous
    median, low, high = per_task("metrics")
    print(
        f"{'metrics':<10}{median - total:>10.1f}{median:>12.1f}{low:>12.1f}..{high:<8.1f}"
        "  (with a metric reader)"
    )
    print(f"total: {total:.1f} us of CPU per task (target: at most 100)")


if __name__ == "__main__":
    main()
