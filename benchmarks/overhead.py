"""Overhead of scalable-otel: the same Dask workflow with and without instrumentation.

Two workloads, each run as plain Dask and as a `ScalableSession`, interleaved
(plain, instrumented, plain, instrumented, ...) for --rounds rounds:

* noop:   --noop N tasks that return at once (Dask's own cost is ~1.7 ms a task
          on a 2-core machine, so this shows the per-task cost of telemetry);
* sleepy: --sleepy N tasks of time.sleep(0.005).

Every measurement gets a fresh cluster (2 worker processes, 1 thread each).
Only submit + gather is timed; cluster start and session start/close are not
(the session's close, which flushes telemetry, is printed separately). After
each instrumented run the run directory's tasks.jsonl must hold N
task_completed lines, so the telemetry was really recorded.

Driver memory: a background thread samples the driver's RSS every 50 ms during
the timed region (peak reported for both modes) and, every 250 ms, counts the
finished futures; RSS at each 2,000 finished tasks gives the growth per 10,000
tasks (least-squares slope, taken from the instrumented runs).

    python benchmarks/overhead.py            # defaults: 3 rounds, 10000 / 2000 tasks
    python benchmarks/overhead.py --quick    # smoke run: 1 round, 1000 / 200 tasks
    python benchmarks/overhead.py --profile  # + where the instrumented driver spends time
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

MB = 1024 * 1024
SAMPLE_S = 0.05
COUNT_EVERY = 5  # count finished futures every 5th sample (250 ms)


# --- task functions (module level: pickled to the worker processes) ---------------------
def noop(i):
    return i


def sleepy(i):
    time.sleep(0.005)
    return i


WORKLOADS = {"noop": noop, "sleepy": sleepy}


# --- driver memory sampler ---------------------------------------------------------------
class DriverSampler:
    """RSS of this process every 50 ms; every 250 ms also (finished futures, RSS)."""

    def __init__(self):
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.futures = None  # set once map() returned
        self.peak = 0
        self.points: list[tuple[int, int]] = []  # (finished tasks, rss)
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self):
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample(count=True)

    def _sample(self, count: bool) -> None:
        rss = self._proc.memory_info().rss
        self.peak = max(self.peak, rss)
        futures = self.futures
        if count and futures is not None:
            done = sum(1 for f in futures if f.done())
            self.points.append((done, rss))

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(SAMPLE_S):
            n += 1
            self._sample(count=n % COUNT_EVERY == 0)

    def milestones(self, step: int) -> list[tuple[int, int]]:
        """(milestone, rss) at the first sample with >= milestone finished tasks."""
        out, want = [], step
        for done, rss in self.points:
            while done >= want:
                out.append((want, rss))
                want += step
        return out


def slope_per_10k(points: list[tuple[int, int]]) -> float | None:
    """Least-squares growth of RSS (MB) per 10,000 finished tasks."""
    if len(points) < 2:
        return None
    xs = [p[0] for p in points]
    ys = [p[1] / MB for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx * 10_000


# --- optional thread-aware sampling profiler (--profile) ----------------------------------
class StackProfiler:
    """Samples every thread's stack (sys._current_frames) every `interval` seconds.

    cProfile and pyinstrument only see the calling thread, but the overhead of
    the instrumentation lives in the Dask client's event-loop thread and the
    recorder/writer threads; this one counts, per function, how many samples
    had it on some thread's stack (inclusive) or on top (self), per thread.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.inclusive = collections.Counter()
        self.self_time = collections.Counter()
        self.threads = collections.Counter()
        self.busy = collections.Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-profiler", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval):
            names = {t.ident: t.name for t in threading.enumerate()}
            self.samples += 1
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                tname = names.get(ident, str(ident))
                top = _where(frame)
                idle = _idle(frame)
                self.threads[tname] += 1
                if not idle:
                    self.busy[tname] += 1
                    self.self_time[(tname, top)] += 1
                seen = set()
                f = frame
                while f is not None:
                    w = _where(f)
                    if w not in seen:
                        seen.add(w)
                        if not idle:
                            self.inclusive[(tname, w)] += 1
                    f = f.f_back

    def report(self, package: str = "scalable_otel", top: int = 15) -> None:
        print(f"\nprofile: {self.samples} samples of every thread, "
              f"{self.interval * 1e3:.0f} ms apart (share = samples / all samples)")
        print("busy share per thread (not waiting in select/wait/sleep/lock):")
        for tname, n in self.busy.most_common(8):
            print(f"  {n / self.samples:6.1%}  {tname}")
        print(f"inclusive, functions in {package}:")
        own = [(k, n) for k, n in self.inclusive.items() if package in k[1]]
        for (tname, w), n in sorted(own, key=lambda kv: -kv[1])[:top]:
            print(f"  {n / self.samples:6.1%}  {_short(w):60s} [{tname}]")
        print("self, top functions anywhere:")
        for (tname, w), n in self.self_time.most_common(top):
            print(f"  {n / self.samples:6.1%}  {_short(w):60s} [{tname}]")


def _where(frame) -> str:
    code = frame.f_code
    return f"{code.co_filename}:{code.co_name}"


def _short(where: str) -> str:
    path, _, fn = where.rpartition(":")
    parts = Path(path).parts
    for anchor in ("scalable_otel", "distributed", "opentelemetry", "tornado", "asyncio",
                   "msgpack", "dask"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            return "/".join(parts[i:]) + ":" + fn
    return "/".join(parts[-2:]) + ":" + fn


def _idle(frame) -> bool:
    # A thread is idle when its top frame is a blocking call (C calls leave no frame,
    # so the top Python frame is the one that called select/wait/...).
    code = frame.f_code
    if code.co_name in ("select", "poll", "_poll") and "selectors" in code.co_filename:
        return True
    if code.co_name == "wait" and "threading" in code.co_filename:
        return True
    if code.co_name in ("_wait_for_tstate_lock",):
        return True
    return False


# --- one measurement ---------------------------------------------------------------------
def run_plain(fn, n: int) -> dict:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        gc.collect()
        with DriverSampler() as sampler:
            t0 = time.perf_counter()
            futures = client.map(fn, range(n), pure=False)
            sampler.futures = futures
            results = client.gather(futures)
            elapsed = time.perf_counter() - t0
        assert len(results) == n
        del futures, results
    return {"time": elapsed, "peak": sampler.peak, "sampler": sampler}


def run_instrumented(fn, n: int, runs_dir: Path, profiler: StackProfiler | None = None) -> dict:
    from scalable_otel import ScalableSession

    session = ScalableSession(target="local", n_workers=2, threads_per_worker=1,
                              project="bench", runs_dir=runs_dir)
    with session as s:
        s.client.wait_for_workers(2)
        gc.collect()
        with DriverSampler() as sampler:
            if profiler is not None:
                profiler.__enter__()
            t0 = time.perf_counter()
            futures = s.map(fn, range(n), pure=False)
            sampler.futures = futures
            results = s.gather(futures)
            elapsed = time.perf_counter() - t0
            if profiler is not None:
                profiler.__exit__(None, None, None)
        assert len(results) == n
        del futures, results
        t_close = time.perf_counter()
    close_s = time.perf_counter() - t_close
    if s.run_dir is None:
        raise SystemExit("instrumented run recorded nothing: telemetry is off "
                         "(OTEL_SDK_DISABLED / SCALABLE_TELEMETRY?)")
    completed = 0
    with open(s.run_dir / "tasks.jsonl", "rb") as f:
        for line in f:
            if b'"event":"task_completed"' in line:
                completed += 1
    return {"time": elapsed, "peak": sampler.peak, "sampler": sampler, "close": close_s,
            "recorded": completed, "status": s.status}


# --- main --------------------------------------------------------------------------------
def fmt_ratio(r):
    return f"{r:.3f}" if r is not None else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--noop", type=int, default=10_000, help="no-op tasks")
    parser.add_argument("--sleepy", type=int, default=2_000, help="5 ms tasks")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1000 no-op and 200 5 ms tasks, 1 round")
    parser.add_argument("--only", choices=sorted(WORKLOADS), action="append",
                        help="run only this workload (repeatable)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the untimed warm-up run of each mode")
    parser.add_argument("--profile", action="store_true",
                        help="sample all driver threads during the instrumented no-op runs")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.noop, args.sleepy = 1, 1000, 200
    sizes = {"noop": args.noop, "sleepy": args.sleepy}
    workloads = args.only or ["noop", "sleepy"]

    import dask
    import distributed
    import opentelemetry.version

    import scalable_otel

    print(f"python {sys.version.split()[0]}, dask {dask.__version__}, distributed "
          f"{distributed.__version__}, opentelemetry-sdk {opentelemetry.version.__version__}, "
          f"scalable_otel {scalable_otel.__version__}, cpus {os.cpu_count()}")
    print(f"rounds {args.rounds}, sizes {sizes}; fresh LocalCluster(2 procs x 1 thread) per "
          "measurement; only submit+gather timed; order plain, instrumented per round")
    runs_root = Path(tempfile.mkdtemp(prefix="scalable-bench-"))
    print(f"run directories under {runs_root}")

    if not args.no_warmup:  # imports, first-time costs of both modes
        run_plain(noop, 200)
        w = run_instrumented(noop, 200, runs_root)
        assert w["recorded"] == 200, w["recorded"]

    profiler = StackProfiler() if args.profile else None
    results = {name: {"plain": [], "instr": []} for name in workloads}
    for name in workloads:
        fn, n = WORKLOADS[name], sizes[name]
        for r in range(args.rounds):
            p = run_plain(fn, n)
            results[name]["plain"].append(p)
            i = run_instrumented(fn, n, runs_root,
                                 profiler if (name == "noop" and profiler) else None)
            results[name]["instr"].append(i)
            ok = "ok" if i["recorded"] == n else f"MISSING {n - i['recorded']}"
            print(f"  {name:6s} round {r + 1}: plain {p['time']:7.3f} s  instrumented "
                  f"{i['time']:7.3f} s  ratio {i['time'] / p['time']:.3f}  close "
                  f"{i['close']:.2f} s  peak MB {p['peak'] / MB:.0f}/{i['peak'] / MB:.0f}  "
                  f"task_completed {i['recorded']}/{n} {ok} ({i['status']})", flush=True)

    print("\nRSS of the driver at each milestone of finished tasks (instrumented, MB):")
    growth = {}
    for name in workloads:
        n = sizes[name]
        step = max(1, min(2000, n // 5))
        slopes_i, slopes_p = [], []
        for r, i in enumerate(results[name]["instr"]):
            ms = i["sampler"].milestones(step)
            s = slope_per_10k(ms)
            if s is not None:
                slopes_i.append(s)
            print(f"  {name:6s} round {r + 1}: " +
                  "  ".join(f"{k}:{v / MB:.1f}" for k, v in ms) +
                  (f"  -> {s:+.2f} MB/10k" if s is not None else ""))
        for p in results[name]["plain"]:
            s = slope_per_10k(p["sampler"].milestones(step))
            if s is not None:
                slopes_p.append(s)
        growth[name] = (statistics.median(slopes_i) if slopes_i else None,
                        statistics.median(slopes_p) if slopes_p else None)

    print("\nworkload       N  plain_s  instrumented_s  ratio(median)  ratio(min..max)  "
          "close_s  driver_peak_MB plain/instr  growth_MB_per_10k instr (plain)")
    all_ok = True
    for name in workloads:
        n = sizes[name]
        ps = [x["time"] for x in results[name]["plain"]]
        its = [x["time"] for x in results[name]["instr"]]
        ratios = [b / a for a, b in zip(ps, its)]
        closes = [x["close"] for x in results[name]["instr"]]
        peak_p = max(x["peak"] for x in results[name]["plain"]) / MB
        peak_i = max(x["peak"] for x in results[name]["instr"]) / MB
        recorded = all(x["recorded"] == n for x in results[name]["instr"])
        all_ok &= recorded
        gi, gp = growth[name]
        gtxt = (f"{gi:+.2f}" if gi is not None else "n/a") + (
            f" ({gp:+.2f})" if gp is not None else " (n/a)")
        print(f"{name:8s} {n:6d}  {statistics.median(ps):7.3f}  {statistics.median(its):14.3f}  "
              f"{statistics.median(ratios):13.3f}  {min(ratios):6.3f}..{max(ratios):<6.3f}  "
              f"{statistics.median(closes):7.2f}  {peak_p:14.0f}/{peak_i:<5.0f}       {gtxt}")
    print(f"telemetry recorded: {'all task_completed lines present' if all_ok else 'MISSING LINES'}"
          " (targets: ratio <= 1.05 noop, <= 1.02 sleepy)")
    if profiler is not None:
        profiler.report()
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
