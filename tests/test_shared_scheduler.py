"""Runs that share one scheduler stay apart: each run directory holds exactly the tasks its
own client asked for, while workers and their resource samples are every run's.

One real `dask scheduler` and two `dask worker` processes on 127.0.0.1 (free ports), and
beside them sessions made every way a run attaches: `ScalableSession(target="tcp://…")`,
`ScalableSession.attach(client)`, `DaskInstrumentor` and a LocalCluster session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from distributed import Client, Event, wait

from scalable_otel import ScalableSession
from scalable_otel import semconv as sc
from scalable_otel.rundir import list_runs
from tests import workloads
from tests.conftest import REPO, events, read_jsonl, wait_for
from tests.executions import trace_spans

DASK = Path(sys.executable).parent / "dask"


def held(x, event: str):
    """A task that runs until the test sets the Dask event `event`."""
    from distributed import Event

    Event(event).wait(timeout=120)
    return x


def traced(x):
    """A task that makes a span with the plain OpenTelemetry API."""
    from opentelemetry import trace

    with trace.get_tracer("user.code").start_as_current_span("solve", attributes={"x": x}):
        return x


@pytest.fixture(scope="module")
def scheduler_address(tmp_path_factory):
    """A `dask scheduler` and two `dask worker` processes, connected."""
    root = tmp_path_factory.mktemp("shared-scheduler")
    file = root / "scheduler.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALABLE_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    common = dict(cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(file),
            ],
            start_new_session=True,
            **common,
        )  # fmt: skip
    ]
    try:
        address = wait_for(lambda: file.exists() and _address(file), timeout=60)
        for _ in range(2):
            processes.append(
                subprocess.Popen(
                    [
                        DASK,
                        "worker",
                        "--scheduler-file",
                        str(file),
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "2",
                        "--no-dashboard",
                    ],
                    start_new_session=True,
                    **common,
                )  # fmt: skip
            )
        with Client(address) as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)


def _address(file: Path) -> str | None:
    try:
        return orjson.loads(file.read_bytes())["address"]
    except (OSError, orjson.JSONDecodeError, KeyError):
        return None  # not written yet


def _stop(process: subprocess.Popen) -> None:
    """End a process this module started, and its children (a worker's nanny's)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # a worker left behind by its nanny
    except ProcessLookupError:
        pass


def task_events(run_dir: Path) -> Counter:
    """(event, key) -> how many lines of tasks.jsonl."""
    return Counter((e["event"], e["key"]) for e in events(run_dir))


def assert_holds_exactly(run_dir: Path, keys: set) -> None:
    """Each of `keys` submitted, started and completed once; no other task's line."""
    seen = task_events(run_dir)
    expected = Counter(
        {
            (event, key): 1
            for key in keys
            for event in (sc.TASK_SUBMITTED, sc.TASK_STARTED, sc.TASK_COMPLETED)
        }
    )
    assert seen == expected, (
        f"missing {sorted(set(expected) - set(seen))[:5]}, "
        f"foreign {sorted(set(seen) - set(expected))[:5]}"
    )
    run = orjson.loads((run_dir / "run.json").read_bytes())
    assert run["status"] == "completed"
    assert (run["tasks_submitted"], run["tasks_completed"], run["tasks_failed"]) == (
        len(keys),
        len(keys),
        0,
    )


def assert_sees_every_worker(run_dir: Path, workers: set) -> None:
    added = {
        e["worker"] for e in read_jsonl(run_dir / "workers.jsonl") if e["event"] == "worker_added"
    }
    assert added == workers
    sampled = {
        e["worker"]
        for e in read_jsonl(run_dir / "resources.jsonl")
        if e["event"] == "resource_sample"
    }
    assert sampled == workers


def spans_named(run_dir: Path, name: str) -> list:
    return [span for span in trace_spans(run_dir) if span.name == name]


def assert_task_spans_in_own_trace(run_dir: Path, traced_futures: dict) -> None:
    """The spans made inside the run's `traced` tasks ({x: future}), and no other, each
    under its task's execution span (its task_started line) in the run's trace."""
    run = orjson.loads((run_dir / "run.json").read_bytes())
    task_span = {e["key"]: e["span_id"] for e in events(run_dir, event=sc.TASK_STARTED)}
    solves = spans_named(run_dir, "solve")
    by_x = {next(a.value.int_value for a in s.attributes if a.key == "x"): s for s in solves}
    assert len(solves) == len(traced_futures) and set(by_x) == set(traced_futures)
    for x, span in by_x.items():
        assert span.trace_id.hex() == run["trace_id"]
        assert span.parent_span_id.hex() == task_span[traced_futures[x].key]


def assert_no_plugins_left(client: Client) -> None:
    def plugin_names(dask_scheduler):
        return list(dask_scheduler.plugins), list(dask_scheduler.worker_plugins)

    scheduler_plugins, worker_plugins = client.run_on_scheduler(plugin_names)
    assert not [n for n in scheduler_plugins if n.startswith(sc.SCHEDULER_PLUGIN_NAME)]
    assert not [n for n in worker_plugins if n.startswith(sc.WORKER_PLUGIN_NAME)]


def keys_of(futures) -> set:
    return {f.key for f in futures}


def test_two_sessions_and_a_plain_client_record_only_their_own_tasks(
    scheduler_address, project_dir
):
    """Overlapping in time, the first session closing while the second still submits."""
    options = dict(runs_dir=project_dir / "runs", cache_dir=project_dir / "cache")
    plain = Client(scheduler_address)
    b_client = Client(scheduler_address)
    first = ScalableSession(scheduler_address, project="alpha", **options).start()
    second = ScalableSession.attach(b_client, project="beta", **options)
    try:
        workers = set(plain.scheduler_info()["workers"])
        plain_before = plain.map(workloads.add, range(6), range(6))
        a = first.map(workloads.sleep_then, range(4), seconds=0.1)
        a_traced = dict(zip(range(3), first.map(traced, range(3))))
        a += list(a_traced.values())
        a += first.map(workloads.simulate, range(3))
        # running on the workers when the first session closes
        go = Event("second-run-goes-on", client=b_client)
        b_slow = b_client.map(held, range(100, 102), event=go.name)
        b_traced = dict(zip(range(10, 12), b_client.map(traced, range(10, 12))))
        b = list(b_traced.values()) + b_client.map(workloads.simulate, range(50, 53))
        # a key both runs want: computed for the first, already in memory for the second
        a_done = first.submit(workloads.inc, 1000)
        first.gather(a + [a_done])
        b_done = b_client.submit(workloads.inc, 1000)
        # ... and one both submit while it runs
        a_running = first.submit(workloads.sleep_then, 2000, seconds=0.5)
        b_running = b_client.submit(workloads.sleep_then, 2000, seconds=0.5)
        assert (a_done.key, a_running.key) == (b_done.key, b_running.key)
        first.gather(a_running)
        a_keys = keys_of(a) | {a_done.key, a_running.key}
        first.close()
        assert not any(f.done() for f in b_slow)
        go.set()

        # the second run goes on, beside the plain client
        b += b_client.map(workloads.inc, range(200, 205))
        plain_after = plain.map(workloads.inc, range(300, 305))
        b_client.gather(b + b_slow + [b_done, b_running])
        wait(plain_before + plain_after)
        b_keys = keys_of(b + b_slow) | {b_done.key, b_running.key}
        second.close()
        assert b_client.status == "running"  # an attached session leaves its client
        assert_no_plugins_left(plain)
    finally:
        for session in (first, second):
            if session.status is None:
                session.close()
        b_client.close()
        plain.close()
    assert_holds_exactly(first.run_dir, a_keys)
    assert_holds_exactly(second.run_dir, b_keys)
    for session in (first, second):
        assert_sees_every_worker(session.run_dir, workers)
    assert_task_spans_in_own_trace(first.run_dir, a_traced)
    assert_task_spans_in_own_trace(second.run_dir, b_traced)
    for run_dir, ours in ((first.run_dir, a_keys), (second.run_dir, b_keys)):
        lookups = read_jsonl(run_dir / "cache.jsonl")
        simulated = {k for k in ours if k.startswith("simulate-")}
        assert len(lookups) == 3 and {e["key"] for e in lookups} == simulated


def test_instrumented_clients_on_one_scheduler_record_a_run_each(
    scheduler_address, project_dir, instrumentor
):
    runs_root = project_dir / "runs"
    instrumentor.instrument(runs_dir=runs_root, project="inst")
    first, second = Client(scheduler_address), Client(scheduler_address)
    try:
        a = first.map(workloads.inc, range(10, 16))
        b = second.map(workloads.inc, range(20, 23))
        first.gather(a)
        first.close()
        b += second.map(workloads.add, range(3), range(3))
        second.gather(b)
    finally:
        first.close()
        second.close()
    instrumentor.uninstrument()
    (run_a, run_b) = list_runs(runs_root)
    assert_holds_exactly(run_a, keys_of(a))
    assert_holds_exactly(run_b, keys_of(b))
    with Client(scheduler_address) as plain:
        assert_no_plugins_left(plain)


def test_a_local_cluster_session_ignores_other_clients_of_its_scheduler(project_dir):
    with ScalableSession(target="local", n_workers=1, threads_per_worker=2) as session:
        with Client(session.cluster) as other, Client(session.cluster) as attached_client:
            theirs = other.map(workloads.inc, range(100, 105))
            with ScalableSession.attach(attached_client, project="attached") as attached:
                theirs += other.map(workloads.inc, range(200, 205))
                also_theirs = attached_client.map(workloads.add, range(3), range(3))
                ours = session.map(workloads.inc, range(4))
                session.gather(ours)
                attached_client.gather(also_theirs)
            wait(theirs)
    assert_holds_exactly(session.run_dir, keys_of(ours))
    assert_holds_exactly(attached.run_dir, keys_of(also_theirs))


def test_a_worker_crash_is_in_every_run_on_the_scheduler(scheduler_address, project_dir):
    options = dict(runs_dir=project_dir / "runs", cache_dir=project_dir / "cache")
    with Client(scheduler_address) as client:
        with (
            ScalableSession(scheduler_address, project="alpha", **options) as first,
            ScalableSession.attach(client, project="beta", **options) as second,
        ):
            pids = client.run(os.getpid)
            victim = min(pids)
            os.kill(pids[victim], signal.SIGKILL)  # its nanny starts a new worker
            wait_for(
                lambda: (
                    victim not in client.scheduler_info()["workers"]
                    and len(client.scheduler_info()["workers"]) == 2
                ),
                timeout=90,
            )
            first.gather(first.map(workloads.inc, range(3)))
            client.gather(client.map(workloads.inc, range(10, 13)))
    for session in (first, second):
        crashed = [
            e["worker"]
            for e in read_jsonl(session.run_dir / "workers.jsonl")
            if e["event"] == "worker_crashed"
        ]
        assert crashed == [victim]
