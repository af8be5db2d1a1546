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
    python benchmarks/overhead.py --profile --only noop --rounds 1  # needs yappi
    python benchmarks/overhead.py --otlp     # also instrumented + OTLP export, per round

With --otlp each round also runs the instrumented session exporting its spans and
metrics over OTLP/HTTP to a sink on 127.0.0.1 (a separate process that accepts every
request), and prints the ratio with OTLP against without, in the same round.
"""

from __future__ import annotations

import argparse
import contextlib
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
        self.start = self.peak = 0
        self.points: list[tuple[int, int]] = []  # (finished tasks, rss)
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self):
        self.start = self.peak = self._proc.memory_info().rss
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


# --- optional profiler (--profile) -------------------------------------------------------
class ThreadProfiler:
    """yappi (pip install yappi) on every driver thread, CPU clock.

    cProfile and pyinstrument only see the calling thread, but with a
    LocalCluster the scheduler runs on the driver's event-loop thread and the
    recorder and writer have threads of their own, all under one GIL. yappi's
    own overhead inflates the run; read the shares, not the seconds.
    """

    def __init__(self):
        try:
            import yappi
        except ImportError:
            raise SystemExit("--profile needs yappi: pip install yappi") from None
        self.yappi = yappi
        yappi.set_clock_type("cpu")

    def __enter__(self):
        self.yappi.clear_stats()
        self.yappi.start(builtins=False, profile_threads=True)
        return self

    def __exit__(self, *exc):
        self.yappi.stop()
        self.threads = list(self.yappi.get_thread_stats())
        self.funcs = list(self.yappi.get_func_stats())

    def report(self, package: str = "scalable_otel", top: int = 12) -> None:
        total = sum(t.ttot for t in self.threads) or 1.0
        print(
            f"\nprofile (yappi, CPU time of the driver's threads, last instrumented noop run; "
            f"total {total:.1f} s CPU)"
        )
        for t in sorted(self.threads, key=lambda t: -t.ttot):
            if t.ttot < 0.01 * total:
                continue
            funcs = [f for f in self.funcs if f.ctx_id == t.id]
            own = sorted((f for f in funcs if package in f.module), key=lambda f: -f.ttot)
            print(
                f"  thread {t.name}#{t.id}: {t.ttot:.2f} s CPU ({t.ttot / total:.0%} of all)"
                f"{'' if own else ', nothing from ' + package}"
            )
            for f in own[:top]:
                print(
                    f"    {f.ttot / t.ttot:6.1%} incl  {f.tsub / t.ttot:6.1%} self  "
                    f"n={f.ncall:<7d} {_short(f.module)}:{f.name}"
                )


def _short(path: str) -> str:
    parts = Path(path).parts
    for anchor in ("scalable_otel", "opentelemetry", "distributed"):
        if anchor in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(anchor) :])
    return "/".join(parts[-2:])


# --- CPU seconds by process --------------------------------------------------------------
def _process_cpu(dask_worker=None) -> float:
    t = os.times()
    return t.user + t.system


class CpuMeter:
    """CPU seconds used over the timed region by the driver, the workers and (when there is
    one) the session's telemetry process: steadier than wall time on a shared machine."""

    def __init__(self, client, telemetry_pid: int | None = None):
        self.client = client
        self.telemetry = psutil.Process(telemetry_pid) if telemetry_pid else None

    def _read(self) -> tuple[float, float, float]:
        workers = sum(self.client.run(_process_cpu).values())
        telemetry = sum(self.telemetry.cpu_times()[:2]) if self.telemetry else 0.0
        return time.process_time(), workers, telemetry

    def __enter__(self):
        self.start = self._read()
        return self

    def __exit__(self, *exc):
        end = self._read()
        self.driver, self.workers, self.telemetry_s = (b - a for a, b in zip(self.start, end))


# --- one measurement ---------------------------------------------------------------------
def timed_map(mapper, fn, n: int, meter: CpuMeter, profiler=None) -> dict:
    """Time `mapper.map(fn, range(n))` and its gather: wall, CPU and driver memory."""
    with meter as cpu, DriverSampler() as sampler:
        if profiler is not None:
            profiler.__enter__()
        t0 = time.perf_counter()
        futures = mapper.map(fn, range(n), pure=False)
        sampler.futures = futures
        results = mapper.gather(futures)
        elapsed = time.perf_counter() - t0
        if profiler is not None:
            profiler.__exit__(None, None, None)
    assert len(results) == n
    return {
        "time": elapsed,
        "peak": sampler.peak,
        "rise": sampler.peak - sampler.start,
        "sampler": sampler,
        "cpu": cpu,
    }


@contextlib.contextmanager
def plain_client():
    """A client of a fresh LocalCluster (2 worker processes, 1 thread each), workers up."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2)
        yield client


def run_plain(fn, n: int) -> dict:
    with plain_client() as client:
        gc.collect()
        return timed_map(client, fn, n, CpuMeter(client))


def run_instrumented(fn, n: int, runs_dir: Path, profiler=None, otlp: str | None = None) -> dict:
    from scalable_otel import ExportOptions, ScalableSession

    session = ScalableSession(
        target="local",
        n_workers=2,
        threads_per_worker=1,
        project="bench",
        runs_dir=runs_dir,
        exports=ExportOptions(otlp_endpoint=otlp),
    )
    with session as s:
        s.client.wait_for_workers(2)
        gc.collect()
        process = getattr(s._recording, "_process", None)
        meter = CpuMeter(s.client, process.pid if process else None)
        measured = timed_map(s, fn, n, meter, profiler)
        t_close = time.perf_counter()
    close_s = time.perf_counter() - t_close
    if s.run_dir is None:
        raise SystemExit(
            "instrumented run recorded nothing: telemetry is off "
            "(OTEL_SDK_DISABLED / SCALABLE_TELEMETRY?)"
        )
    completed = 0
    with open(s.run_dir / "tasks.jsonl", "rb") as f:
        for line in f:
            if b'"event":"task_completed"' in line:
                completed += 1
    return dict(measured, close=close_s, recorded=completed, status=s.status)


SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class OtlpSink:
    """An OTLP/HTTP receiver that accepts everything, in its own process."""

    def __enter__(self):
        import subprocess

        self.process = subprocess.Popen(
            [sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True
        )
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait()


# --- main --------------------------------------------------------------------------------
def fmt_ratio(r):
    return f"{r:.3f}" if r is not None else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--noop", type=int, default=10_000, help="no-op tasks")
    parser.add_argument("--sleepy", type=int, default=2_000, help="5 ms tasks")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1000 no-op and 200 5 ms tasks, 1 round"
    )
    parser.add_argument(
        "--only",
        choices=sorted(WORKLOADS),
        action="append",
        help="run only this workload (repeatable)",
    )
    parser.add_argument(
        "--no-warmup", action="store_true", help="skip the untimed warm-up run of each mode"
    )
    parser.add_argument(
        "--otlp",
        action="store_true",
        help="also run instrumented with OTLP export to a local sink, each round",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the driver's threads (yappi) in the instrumented no-op "
        "runs; this slows those runs, so ignore their ratio",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.noop, args.sleepy = 1, 1000, 200
    sizes = {"noop": args.noop, "sleepy": args.sleepy}
    workloads = args.only or ["noop", "sleepy"]

    import dask
    import distributed
    import opentelemetry.version

    import scalable_otel

    print(
        f"python {sys.version.split()[0]}, dask {dask.__version__}, distributed "
        f"{distributed.__version__}, opentelemetry-sdk {opentelemetry.version.__version__}, "
        f"scalable_otel {scalable_otel.__version__}, cpus {os.cpu_count()}"
    )
    print(
        f"rounds {args.rounds}, sizes {sizes}; fresh LocalCluster(2 procs x 1 thread) per "
        "measurement; only submit+gather timed; order plain, instrumented per round"
    )
    runs_root = Path(tempfile.mkdtemp(prefix="scalable-bench-"))
    print(f"run directories under {runs_root}")

    if not args.no_warmup:  # imports, first-time costs of both modes
        run_plain(noop, 200)
        w = run_instrumented(noop, 200, runs_root)
        assert w["recorded"] == 200, w["recorded"]

    profiler = ThreadProfiler() if args.profile else None
    sink = OtlpSink().__enter__() if args.otlp else None
    results = {name: {"plain": [], "instr": [], "otlp": []} for name in workloads}
    for name in workloads:
        fn, n = WORKLOADS[name], sizes[name]
        for r in range(args.rounds):
            p = run_plain(fn, n)
            results[name]["plain"].append(p)
            i = run_instrumented(
                fn, n, runs_root, profiler if (name == "noop" and profiler) else None
            )
            results[name]["instr"].append(i)
            ok = "ok" if i["recorded"] == n else f"MISSING {n - i['recorded']}"
            print(
                f"  {name:6s} round {r + 1}: plain {p['time']:7.3f} s  instrumented "
                f"{i['time']:7.3f} s  ratio {i['time'] / p['time']:.3f}  close "
                f"{i['close']:.2f} s  peak MB {p['peak'] / MB:.0f}/{i['peak'] / MB:.0f}  "
                f"task_completed {i['recorded']}/{n} {ok} ({i['status']})",
                flush=True,
            )
            pc, ic = p["cpu"], i["cpu"]
            print(
                f"         CPU ms/task plain: driver {1e3 * pc.driver / n:.3f} workers "
                f"{1e3 * pc.workers / n:.3f} | instrumented: driver {1e3 * ic.driver / n:.3f} "
                f"workers {1e3 * ic.workers / n:.3f} telemetry process "
                f"{1e3 * ic.telemetry_s / n:.3f}",
                flush=True,
            )
            if sink is not None:
                o = run_instrumented(fn, n, runs_root, otlp=sink.url)
                results[name]["otlp"].append(o)
                print(
                    f"         with OTLP {o['time']:7.3f} s  ratio to instrumented "
                    f"{o['time'] / i['time']:.3f}, to plain {o['time'] / p['time']:.3f}  "
                    f"telemetry process CPU ms/task {1e3 * o['cpu'].telemetry_s / n:.3f}  "
                    f"close {o['close']:.2f} s",
                    flush=True,
                )

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
            print(
                f"  {name:6s} round {r + 1}: "
                + "  ".join(f"{k}:{v / MB:.1f}" for k, v in ms)
                + (f"  -> {s:+.2f} MB/10k" if s is not None else "")
            )
        for p in results[name]["plain"]:
            s = slope_per_10k(p["sampler"].milestones(step))
            if s is not None:
                slopes_p.append(s)
        growth[name] = (
            statistics.median(slopes_i) if slopes_i else None,
            statistics.median(slopes_p) if slopes_p else None,
        )

    print(
        "\nworkload       N  plain_s  instrumented_s  ratio(median)  ratio(min..max)  "
        "close_s  driver_peak_MB plain/instr  peak_rise_MB plain/instr  "
        "growth_MB_per_10k instr (plain)"
    )
    all_ok = True
    for name in workloads:
        n = sizes[name]
        ps = [x["time"] for x in results[name]["plain"]]
        its = [x["time"] for x in results[name]["instr"]]
        ratios = [b / a for a, b in zip(ps, its)]
        closes = [x["close"] for x in results[name]["instr"]]
        peak_p = max(x["peak"] for x in results[name]["plain"]) / MB
        peak_i = max(x["peak"] for x in results[name]["instr"]) / MB
        rise_p = statistics.median(x["rise"] for x in results[name]["plain"]) / MB
        rise_i = statistics.median(x["rise"] for x in results[name]["instr"]) / MB
        recorded = all(x["recorded"] == n for x in results[name]["instr"])
        all_ok &= recorded
        gi, gp = growth[name]
        gtxt = (f"{gi:+.2f}" if gi is not None else "n/a") + (
            f" ({gp:+.2f})" if gp is not None else " (n/a)"
        )
        print(
            f"{name:8s} {n:6d}  {statistics.median(ps):7.3f}  {statistics.median(its):14.3f}  "
            f"{statistics.median(ratios):13.3f}  {min(ratios):6.3f}..{max(ratios):<6.3f}  "
            f"{statistics.median(closes):7.2f}  {peak_p:14.0f}/{peak_i:<5.0f}        "
            f"{rise_p:10.1f}/{rise_i:<5.1f}          {gtxt}"
        )
    print(
        f"telemetry recorded: {'all task_completed lines present' if all_ok else 'MISSING LINES'}"
        " (targets: ratio <= 1.05 noop, <= 1.02 sleepy)"
    )
    print(
        "peak = max driver RSS in any round; peak_rise = median over rounds of (peak - RSS at "
        "the start of the timed region);\ngrowth = median least-squares slope of RSS at each "
        "milestone of finished tasks, x 10,000 (plain runs in parentheses)"
    )
    if sink is not None:
        sink.__exit__(None, None, None)
        for name in workloads:
            pairs = zip(results[name]["instr"], results[name]["otlp"])
            ratios = [o["time"] / i["time"] for i, o in pairs]
            print(
                f"OTLP export, {name}: instrumented+OTLP / instrumented, same round: median "
                f"{statistics.median(ratios):.3f} ({min(ratios):.3f}..{max(ratios):.3f})"
            )
    if profiler is not None:
        profiler.report()
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
