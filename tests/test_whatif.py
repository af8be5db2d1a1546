"""The what-if replay on runs of real workflows (LocalClusters with worker processes): what
must hold whatever the timings, checked on the recorded numbers, never on the wall clock."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from scalable_otel import ScalableSession
from scalable_otel.analysis import load_run
from scalable_otel.analysis.graph import Execution
from scalable_otel.analysis.whatif import (
    WhatIfError,
    _Node,
    _uncontended,
    format_whatif,
    headline,
    simulate,
    whatif,
)
from scalable_otel.cli import main
from tests.test_beta_runs import write_beta_run
from tests.workloads import add, inc, sleep_then


def _run(root, name: str, workers: int, submit) -> object:
    with ScalableSession("local", n_workers=workers, threads_per_worker=1, project=name,
                         runs_dir=root) as session:  # fmt: skip
        submit(session).result()
        path = session.run_dir
    return load_run(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three real runs: a chain and independent tasks on 1 worker, a diamond on 2."""
    root = tmp_path_factory.mktemp("whatif") / "runs"

    def chain(session):
        future = session.submit(sleep_then, 0, 0.2, key="chain-0")
        for i in range(1, 4):
            future = session.submit(sleep_then, future, 0.2, key=f"chain-{i}")
        return future

    def independent(session):
        futures = [session.submit(sleep_then, i, 0.3, key=f"each-{i}") for i in range(8)]
        return session.submit(lambda *xs: len(xs), *futures, key="count")

    def diamond(session):
        a = session.submit(sleep_then, 1, 0.2, key="a")
        b = session.submit(sleep_then, a, 0.6, key="b")
        c = session.submit(inc, a, key="c")  # short, beside b: off the critical chain
        return session.submit(add, b, c, key="d")

    return {
        "chain": _run(root, "chain", 1, chain),
        "independent": _run(root, "independent", 1, independent),
        "diamond": _run(root, "diamond", 2, diamond),
        "root": root,
    }


def test_the_replay_of_a_run_as_it_was_is_close_to_its_real_duration(runs):
    for name in ("chain", "independent", "diamond"):
        result = whatif(runs[name])
        assert (result.workers, result.threads_per_worker) == (
            result.real_workers,
            result.real_threads_per_worker,
        )
        assert result.predicted_duration_s == result.replay_duration_s
        # the time outside tasks is taken from the run: what is replayed is the tasks
        assert abs(result.replay_error_percent) < 25, format_whatif(result)


def test_a_chain_gets_no_faster_with_more_workers(runs):
    one, four = whatif(runs["chain"], workers=1), whatif(runs["chain"], workers=4)
    assert four.makespan_s == pytest.approx(one.makespan_s, abs=1e-6)
    assert not four.shortens
    assert four.unlimited_duration_s == pytest.approx(four.predicted_duration_s, abs=1e-6)


def test_independent_equal_tasks_get_about_n_times_faster(runs):
    run = runs["independent"]
    count = {e: whatif(run, workers=e) for e in (1, 2, 4)}
    tail = count[1].makespan_s - 8 * 0.3  # the final `count` task and latencies
    for n in (2, 4):
        speedup = (count[1].makespan_s - tail) / (count[n].makespan_s - tail)
        assert n * 0.8 < speedup < n * 1.1, (n, speedup, count[n].latencies)
        assert count[n].shortens


def test_faster_off_the_critical_chain_changes_nothing(runs):
    run = runs["diamond"]
    base = whatif(run)
    off = whatif(run, faster={"inc": 4.0})  # c, beside the longer b
    on = whatif(run, faster={"sleep_then": 2.0})  # a and b: the chain itself
    assert off.predicted_duration_s == pytest.approx(base.predicted_duration_s, abs=1e-6)
    assert on.predicted_duration_s < base.predicted_duration_s - 0.3  # half of a and b's 0.8 s
    assert "sleep_then 2× faster" in headline(on)


def test_processor_sharing_caps_cpu_bound_tasks_at_the_cores():
    latencies = {"start_latency_s": 0.0, "dependency_latency_s": 0.0, "turnaround_s": 0.0}

    def nodes(cpu):
        return [_Node(f"t{i}", "t", 1.0, 0.0, [], (i,), cpu) for i in range(4)]

    assert simulate(nodes(1.0), 4, latencies) == pytest.approx(1.0)
    assert simulate(nodes(1.0), 4, latencies, cores=2) == pytest.approx(2.0)
    assert simulate(nodes(0.0), 4, latencies, cores=2) == pytest.approx(1.0)  # sleeping
    assert simulate(nodes(1.0), 1, latencies, cores=2) == pytest.approx(4.0)


def test_durations_measured_on_oversubscribed_cores_are_taken_back_to_a_core_each():
    # 4 tasks at once on 2 cores, each 1 CPU second over 2 s of wall time; a sleeping task
    def execution(key):
        return Execution(key, "t", 1, "w", "completed", 0.0, 0.0, 0.0, 2.0, 2.0, ())

    chosen = [execution(f"t{i}") for i in range(4)] + [execution("nap")]
    shares = {(f"t{i}", 1): (1.0, 2.0) for i in range(4)} | {("nap", 1): (0.01, 2.0)}
    own = _uncontended(chosen, shares, cores=2)
    assert own["t0"] == pytest.approx((1.0, 1.0))
    assert own["nap"] == pytest.approx((2.0, 0.005))
    assert _uncontended(chosen, shares, cores=None)["t0"] == pytest.approx((2.0, 0.5))


def test_run_json_records_the_hosts_cpus(runs):
    from scalable_otel.session import usable_cpus

    assert runs["chain"].meta["host_cpus"] == usable_cpus() >= 1


def test_bad_settings_are_errors(runs):
    run = runs["diamond"]
    for kwargs, said in (
        ({"workers": 0}, "workers must be 1 or more"),
        ({"threads_per_worker": 0}, "threads per worker"),
        ({"faster": {"nope": 2}}, "no task 'nope'"),
        ({"faster": {"sleep_then": 0}}, "above 0"),
        ({"faster": {"sleep_then": float("nan")}}, "above 0"),
    ):
        with pytest.raises(WhatIfError, match=said):
            whatif(run, **kwargs)


def test_the_command_and_its_json(runs):
    root = runs["root"]
    result = CliRunner().invoke(
        main, ["whatif", runs["diamond"].run_id, "--workers", "4", "--runs-dir", str(root)]
    )
    assert result.exit_code == 0, result.output
    assert "replay of the run as it was" in result.output
    assert "with 4 workers × 1 thread" in result.output
    result = CliRunner().invoke(
        main, ["whatif", runs["diamond"].run_id, "--runs-dir", str(root), "--format", "json",
               "--faster", "sleep_then=2"],
    )  # fmt: skip
    data = orjson.loads(result.output)
    assert data["faster"] == {"sleep_then": 2.0}
    assert data == whatif(runs["diamond"], faster={"sleep_then": 2}).to_dict()


def test_advise_says_whether_more_workers_help(runs):
    root = str(runs["root"])
    chain = CliRunner().invoke(
        main, ["advise", "--workers", "4", "--run", runs["chain"].run_id, "--runs-dir", root]
    )
    assert chain.exit_code == 0, chain.output
    assert "would not shorten the run" in chain.output
    assert "critical chain" in chain.output
    many = CliRunner().invoke(
        main, ["advise", "--workers", "4", "--run", runs["independent"].run_id, "--runs-dir", root]
    )
    assert "4 workers × 1 thread would take" in many.output, many.output
    assert "the worker-hours" in many.output


def test_a_beta_run_has_nothing_to_replay(tmp_path):
    root = tmp_path / "runs"
    name = "run-20260101T000000Z-lulcc-00000001"
    write_beta_run(root, name, "2026-01-01T00:00:00Z", [4.0, 4.2])
    result = CliRunner().invoke(main, ["whatif", name, "--workers", "2", "--runs-dir", str(root)])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and "beta run" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_html_report_shows_the_same_replay(runs, tmp_path):
    from scalable_otel.analysis.html import write_html_report
    from scalable_otel.analysis.whatif import more_workers, scenarios

    run = runs["independent"]
    page = write_html_report(run, tmp_path / "report.html").read_text()
    section = page[page.index('<section id="whatif-section">') :]
    results = scenarios(run)
    assert [r.workers for r in results] == [1, 2, 4]
    assert "1 (as it was)" in section
    assert more_workers(results[-1]) in section
