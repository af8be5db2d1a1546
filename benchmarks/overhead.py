"""Overhead of scalable-otel: the same Dask workflow as plain Dask, in a `ScalableSession`,
and inside `distributed.performance_report` (what a Dask user would use instead).

Each round runs the three arms on the same workload, each on a fresh cluster (2 worker
processes, 1 thread each), in an order that changes from round to round (the six orders
of three arms in turn), so that no arm always runs first or last:

* plain:   `Client.map` + `gather`, nothing else;
* session: the same inside a `ScalableSession` (its scheduler and worker plugins, and its
           telemetry process);
* report:  plain Dask inside `distributed.performance_report(filename=...)`, the HTML
           file written to a temporary directory.

Workloads are tasks of one length each: no-op (Dask's own cost, ~1.8 ms of wall time a
task on a 2-core machine, so this shows the per-task cost of telemetry) and
`time.sleep` of 1, 5, 10 or 100 ms, with task counts chosen so that each workload takes
a similar time (8 to 11 s of plain Dask on 2 cores). By default no-op and 5 ms tasks;
`--lengths` runs no-op, 1 ms, 10 ms and 100 ms tasks in one invocation.

Only submit + gather is timed; cluster start, the session's start and close and the
report's HTML are not (the session's close, which flushes telemetry, and the report's
writing are printed separately). After each session run the run directory's tasks.jsonl
must hold one task_completed line per task, so the telemetry was really recorded.

CPU: the driver's, the workers' and the telemetry process's CPU seconds over the timed
region, per task. With a LocalCluster the scheduler runs in the driver, so "driver,
session - plain" is the scheduler plugin plus the session's own driver-side code (the
thread that sends records to the telemetry process); "workers, session - plain" is the
worker plugin and the trace context of tasks. Both are printed as the median over rounds
of the same-round difference.

Driver memory: a background thread samples the driver's RSS every 50 ms during
the timed region (peak reported for each arm) and, every 250 ms, counts the
finished futures; RSS at each 2,000 finished tasks gives the growth per 10,000
tasks (least-squares slope, taken from the session runs).

    python benchmarks/overhead.py              # 5 rounds, no-op and 5 ms tasks
    python benchmarks/overhead.py --lengths    # 5 rounds, no-op, 1 ms, 10 ms, 100 ms
    python benchmarks/overhead.py --quick      # smoke run: 1 round, a fifth of the tasks
    python benchmarks/overhead.py --only noop --rounds 9
    python benchmarks/overhead.py --profile --only noop --rounds 1  # needs yappi
    python benchmarks/overhead.py --otlp       # also session + OTLP export, per round

With --otlp each round also runs the session exporting its spans and metrics over
OTLP/HTTP to a sink on 127.0.0.1 (a separate process that accepts every request), after
the three arms, and prints the ratio with OTLP against without, in the same round.
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


def sleep_1ms(i):
    time.sleep(0.001)
    return i


def sleep_5ms(i):
    time.sleep(0.005)
    return i


def sleep_10ms(i):
    time.sleep(0.01)
    return i


def sleep_100ms(i):
    time.sleep(0.1)
    return i


# name -> (task, tasks per measurement): about 8-11 s of plain Dask each on 2 cores
WORKLOADS = {
    "noop": (noop, 6_000),
    "1ms": (sleep_1ms, 4_000),
    "5ms": (sleep_5ms, 2_400),
    "10ms": (sleep_10ms, 1_500),
    "100ms": (sleep_100ms, 160),
}
DEFAULT_WORKLOADS = ["noop", "5ms"]
LENGTHS = ["noop", "1ms", "10ms", "100ms"]
ARMS = ("plain", "session", "report")
# the six orders of the three arms; the first three are rotations, so any 3 rounds put
# each arm once in each place
ORDERS = [
    ("plain", "session", "report"),
    ("session", "report", "plain"),
    ("report", "plain", "session"),
    ("plain", "report", "session"),
    ("report", "session", "plain"),
    ("session", "plain", "report"),
]


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


def run_report(fn, n: int, out_dir: Path) -> dict:
    """Plain Dask inside `performance_report`: its task-stream plugin on the scheduler
    records the run; the HTML (written on exit, like the session's close) is not timed."""
    from distributed import performance_report

    path = out_dir / f"report-{time.monotonic_ns()}.html"
    with plain_client() as client:
        report = performance_report(filename=str(path))
        report.__enter__()
        gc.collect()
        measured = timed_map(client, fn, n, CpuMeter(client))
        t_close = time.perf_counter()
        report.__exit__(None, None, None)
        close_s = time.perf_counter() - t_close
    size = path.stat().st_size
    path.unlink()
    return dict(measured, close=close_s, report_bytes=size)


def run_session(fn, n: int, runs_dir: Path, profiler=None, otlp: str | None = None) -> dict:
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
            "session run recorded nothing: telemetry is off "
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


# --- summaries ---------------------------------------------------------------------------
def med_range(values: list[float], fmt: str = "{:.3f}") -> str:
    """'median (min..max)' of `values`."""
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    return f"{fmt.format(statistics.median(values))} ({fmt.format(lo)}..{fmt.format(hi)})"


def ratios(rounds: list[dict], num: str, den: str) -> list[float]:
    return [r[num]["time"] / r[den]["time"] for r in rounds]


def cpu_delta_us(rounds: list[dict], arm: str, part: str, n: int) -> list[float]:
    """Per round: CPU microseconds per task of `part` ("driver", "workers"), arm - plain."""
    return [
        1e6 * (getattr(r[arm]["cpu"], part) - getattr(r["plain"]["cpu"], part)) / n for r in rounds
    ]


def load_average() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# --- main --------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--lengths",
        action="store_true",
        help="tasks of each length: no-op, 1 ms, 10 ms and 100 ms (default: no-op and 5 ms)",
    )
    parser.add_argument(
        "--only",
        choices=list(WORKLOADS),
        action="append",
        help="run only this workload (repeatable)",
    )
    parser.add_argument(
        "--tasks",
        action="append",
        default=[],
        metavar="NAME=N",
        help="tasks per measurement for a workload, e.g. --tasks noop=10000 (repeatable)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 round, a fifth of the tasks"
    )
    parser.add_argument(
        "--no-warmup", action="store_true", help="skip the untimed warm-up run of each arm"
    )
    parser.add_argument(
        "--otlp",
        action="store_true",
        help="also run the session with OTLP export to a local sink, each round",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the driver's threads (yappi) in the session's no-op "
        "runs; this slows those runs, so ignore their ratio",
    )
    args = parser.parse_args()
    workloads = args.only or (LENGTHS if args.lengths else DEFAULT_WORKLOADS)
    sizes = {name: WORKLOADS[name][1] for name in workloads}
    if args.quick:
        args.rounds = 1
        sizes = {name: max(10, n // 5) for name, n in sizes.items()}
    for item in args.tasks:
        name, _, count = item.partition("=")
        if name not in WORKLOADS or not count.isdigit():
            parser.error(f"--tasks {item}: expected NAME=N with NAME one of {list(WORKLOADS)}")
        sizes[name] = int(count)

    try:  # performance_report draws its HTML with bokeh
        import bokeh  # noqa: F401
    except ImportError:
        raise SystemExit("the performance_report arm needs bokeh: pip install bokeh") from None
    import dask
    import distributed
    import opentelemetry.version

    import scalable_otel

    print(
        f"python {sys.version.split()[0]}, dask {dask.__version__}, distributed "
        f"{distributed.__version__}, opentelemetry-sdk {opentelemetry.version.__version__}, "
        f"scalable_otel {scalable_otel.__version__}, cpus {os.cpu_count()}, load average "
        f"{load_average()}"
    )
    print(
        f"rounds {args.rounds}, tasks {sizes}; fresh LocalCluster(2 procs x 1 thread) per "
        "measurement; only submit+gather timed; arms plain, session, report in an order "
        "that changes each round"
    )
    runs_root = Path(tempfile.mkdtemp(prefix="scalable-bench-"))
    print(f"run directories and reports under {runs_root}")

    if not args.no_warmup:  # imports, first-time costs of every arm
        run_plain(noop, 200)
        run_report(noop, 200, runs_root)
        w = run_session(noop, 200, runs_root)
        assert w["recorded"] == 200, w["recorded"]

    profiler = ThreadProfiler() if args.profile else None
    sink = OtlpSink().__enter__() if args.otlp else None
    results: dict[str, list[dict]] = {name: [] for name in workloads}
    loads = [os.getloadavg()[0]]
    all_ok = True
    for r in range(args.rounds):
        order = ORDERS[r % len(ORDERS)]
        for name in workloads:
            fn, n = WORKLOADS[name][0], sizes[name]
            got: dict = {}
            for arm in order:
                if arm == "plain":
                    got[arm] = run_plain(fn, n)
                elif arm == "report":
                    got[arm] = run_report(fn, n, runs_root)
                else:
                    prof = profiler if name == "noop" else None
                    got[arm] = run_session(fn, n, runs_root, prof)
            loads.append(os.getloadavg()[0])
            p, s, rp = got["plain"], got["session"], got["report"]
            ok = s["recorded"] == n
            all_ok &= ok
            print(
                f"  {name:5s} round {r + 1} ({'>'.join(a[0] for a in order)}): plain "
                f"{p['time']:6.2f} s  session {s['time']:6.2f} s ({s['time'] / p['time']:.3f})  "
                f"report {rp['time']:6.2f} s ({rp['time'] / p['time']:.3f})  close session "
                f"{s['close']:.2f} s, report {rp['close']:.2f} s  task_completed "
                f"{s['recorded']}/{n} {'ok' if ok else 'MISSING'}  load {loads[-1]:.1f}",
                flush=True,
            )
            c = {arm: got[arm]["cpu"] for arm in ARMS}
            print(
                "        CPU us/task driver/workers: "
                + "  ".join(
                    f"{arm} {1e6 * c[arm].driver / n:.0f}/{1e6 * c[arm].workers / n:.0f}"
                    for arm in ARMS
                )
                + f"  telemetry process {1e6 * c['session'].telemetry_s / n:.0f}",
                flush=True,
            )
            if sink is not None:
                o = run_session(fn, n, runs_root, otlp=sink.url)
                got["otlp"] = o
                print(
                    f"        with OTLP {o['time']:6.2f} s  ratio to session "
                    f"{o['time'] / s['time']:.3f}, to plain {o['time'] / p['time']:.3f}  "
                    f"telemetry process CPU us/task {1e6 * o['cpu'].telemetry_s / n:.0f}  "
                    f"close {o['close']:.2f} s",
                    flush=True,
                )
            results[name].append(got)

    print("\nRSS of the driver at each milestone of finished tasks (session, MB):")
    growth = {}
    for name in workloads:
        n = sizes[name]
        step = max(1, min(2000, n // 5))
        slopes: dict[str, list[float]] = {arm: [] for arm in ARMS}
        for r, got in enumerate(results[name]):
            ms = got["session"]["sampler"].milestones(step)
            print(f"  {name:5s} round {r + 1}: " + "  ".join(f"{k}:{v / MB:.1f}" for k, v in ms))
            for arm in ARMS:
                s = slope_per_10k(got[arm]["sampler"].milestones(step))
                if s is not None:
                    slopes[arm].append(s)
        growth[name] = {arm: (statistics.median(v) if v else None) for arm, v in slopes.items()}

    print(
        f"\nWall time, median (min..max) over {args.rounds} rounds of the same-round ratio; "
        f"load average over the run {min(loads):.1f}..{max(loads):.1f}"
    )
    print(
        "workload      N  plain_s  session/plain          report/plain           "
        "session/report         close_s session  report"
    )
    for name in workloads:
        rounds = results[name]
        print(
            f"{name:6s} {sizes[name]:7d}  "
            f"{statistics.median(g['plain']['time'] for g in rounds):7.2f}  "
            f"{med_range(ratios(rounds, 'session', 'plain')):21s}  "
            f"{med_range(ratios(rounds, 'report', 'plain')):21s}  "
            f"{med_range(ratios(rounds, 'session', 'report')):21s}  "
            f"{statistics.median(g['session']['close'] for g in rounds):7.2f}  "
            f"{statistics.median(g['report']['close'] for g in rounds):7.2f}"
        )

    print(
        "\nCPU microseconds per task added to plain Dask, median (min..max) of the same-round "
        "difference\n(driver = scheduler + client; for the session also its scheduler plugin "
        "and record forwarding. workers = both worker processes; for the session its worker "
        "plugin and task context)"
    )
    print(
        "workload  session driver         session workers        report driver          "
        "report workers         telemetry process"
    )
    for name in workloads:
        rounds, n = results[name], sizes[name]
        tele = [1e6 * g["session"]["cpu"].telemetry_s / n for g in rounds]
        print(
            f"{name:6s}    "
            + "  ".join(
                f"{med_range(cpu_delta_us(rounds, arm, part, n), '{:+.0f}'):21s}"
                for arm in ("session", "report")
                for part in ("driver", "workers")
            )
            + f"  {med_range(tele, '{:.0f}')}"
        )
    if "noop" in workloads:
        rounds, n = results["noop"], sizes["noop"]
        d = statistics.median(cpu_delta_us(rounds, "session", "driver", n))
        w = statistics.median(cpu_delta_us(rounds, "session", "workers", n))
        print(
            f"no-op tasks, session - plain: driver {d:+.1f} us/task (scheduler plugin and "
            f"forwarding), workers {w:+.1f} us/task (worker plugin); target: each <= 20"
        )

    print(
        "\nDriver memory, MB: peak of any round, median rise over the timed region, growth "
        "per 10,000 finished tasks (median least-squares slope)"
    )
    for name in workloads:
        rounds = results[name]
        print(
            f"  {name:5s} "
            + "  ".join(
                f"{arm} peak {max(g[arm]['peak'] for g in rounds) / MB:.0f} rise "
                f"{statistics.median(g[arm]['rise'] for g in rounds) / MB:.1f} growth "
                + (f"{growth[name][arm]:+.2f}" if growth[name][arm] is not None else "n/a")
                for arm in ARMS
            )
        )
    print(
        f"telemetry recorded: {'all task_completed lines present' if all_ok else 'MISSING LINES'}"
    )
    if sink is not None:
        sink.__exit__(None, None, None)
        for name in workloads:
            rounds = results[name]
            print(
                f"OTLP export, {name}: session+OTLP / session, same round: "
                f"{med_range(ratios(rounds, 'otlp', 'session'))}"
            )
    if profiler is not None:
        profiler.report()
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
