"""JGCRI's Scalable tool (`scalable` on PyPI): `ScalableClient` tags and `cacheable` lookups
recorded through DaskInstrumentor, on a real LocalCluster."""

import gc
import os

import orjson
import pytest


def _import_the_tool():
    """The tool's `scalable.caching`; skip without it, but fail under SCALABLE_CI, where it
    is a test dependency: a broken install must not pass as a skipped module."""
    try:
        import scalable.caching
    except Exception as exc:  # ImportError, or whatever its own imports raise
        message = f"JGCRI's scalable does not import ({type(exc).__name__}: {exc})"
        if os.environ.get("SCALABLE_CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
    return scalable.caching


caching = _import_the_tool()

import diskcache  # noqa: E402  (installed with scalable)
from distributed import LocalCluster  # noqa: E402
from scalable import ScalableClient  # noqa: E402

from scalable_otel import cache  # noqa: E402
from scalable_otel.instrumentation import scalable_library  # noqa: E402
from scalable_otel.manifest import Manifest  # noqa: E402
from scalable_otel.rundir import list_runs  # noqa: E402
from tests import scalable_tool_workloads as tool  # noqa: E402
from tests import workloads  # noqa: E402
from tests.conftest import events  # noqa: E402

MANIFEST = """\
version: 1
project: ensemble
targets:
  local: {provider: local}
components:
  sim: {cpus: 2, memory: 4G}
"""


@pytest.fixture
def tool_cache(project_dir, monkeypatch):
    """The Scalable tool's cache directory (a module global it reads at each call)."""
    path = project_dir / "tool-cache"
    monkeypatch.setattr(caching, "cachedir", str(path))
    return path


@pytest.fixture
def cluster(project_dir):
    """Workers with the `sim` resource that `tag="sim"` asks for; started in the project."""
    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=True,
        dashboard_address=None,
        resources={"sim": 2},
    ) as cluster:
        yield cluster


def only_run(root):
    (run_dir,) = list_runs(root)
    return run_dir


def test_tags_become_the_components_of_the_tasks(project_dir, cluster, instrumentor):
    (project_dir / "scalable.yaml").write_text(MANIFEST)
    manifest = Manifest.load(project_dir / "scalable.yaml")
    instrumentor.instrument(runs_dir=project_dir / "runs", manifest=manifest)
    client = ScalableClient(cluster)
    try:
        mapped = client.map(workloads.add, [1, 2, 3], [10, 20, 30], tag="sim", n=1)
        tagged = client.submit(workloads.inc, 5, tag="sim")
        plain = client.submit(workloads.inc, 6)
        generated = client.map(workloads.inc, (i for i in range(2)), tag="sim", n=1)
        assert client.gather(mapped) == [11, 22, 33]
        assert [tagged.result(), plain.result()] == [6, 7]
        assert client.gather(generated) == [1, 2]
    finally:
        client.close()

    run_dir = only_run(project_dir / "runs")
    submitted = {e["key"]: e for e in events(run_dir, event="task_submitted")}
    tagged_keys = {f.key for f in [*mapped, tagged, *generated]}
    assert set(submitted) == tagged_keys | {plain.key}
    for key in tagged_keys:
        assert submitted[key]["component"] == "sim"
    assert "component" not in submitted[plain.key]
    # described before the scheduler saw them: names and arguments, not only keys
    assert submitted[mapped[1].key]["task"] == "add"
    assert submitted[mapped[1].key]["args"] == {"a": 2, "b": 20}
    assert submitted[tagged.key]["args"] == {"x": 5}

    plan = orjson.loads((run_dir / "plan.json").read_bytes())
    graph = {entry["key"]: entry for entry in plan["graph"]}
    assert graph[tagged.key]["component"] == "sim"
    assert graph[tagged.key]["resources"] == {"cpus": 2, "memory": "4G"}
    assert "component" not in graph[plain.key]

    spans = [
        span
        for line in (run_dir / "traces.otlp.jsonl").read_bytes().splitlines()
        for rs in orjson.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]
    components = {
        attr["value"]["stringValue"]
        for span in spans
        for attr in span["attributes"]
        if attr["key"] == "scalable.task.component"
    }
    assert components == {"sim"}


def test_cacheable_lookups_in_the_client_and_on_workers(
    project_dir, tool_cache, cluster, instrumentor
):
    instrumentor.instrument(runs_dir=project_dir / "runs")
    client = ScalableClient(cluster)
    try:
        assert tool.simulate(3) == 30  # in the client: miss, then hit
        assert tool.simulate(3) == 30
        # on a worker, inside tasks: miss, then hit (the package hashes the function's
        # source, so its cacheable functions run inside tasks, not as tasks)
        first = client.submit(tool.simulate_inside, 4, pure=False)
        assert first.result() == 40
        second = client.submit(tool.simulate_inside, 4, pure=False, tag="sim")
        assert second.result() == 40
        with pytest.raises(ValueError, match="diverged"):
            client.submit(tool.crash, 1).result()
    finally:
        client.close()

    run_dir = only_run(project_dir / "runs")
    lines = events(run_dir, "cache.jsonl")
    by_function = {}
    for line in lines:
        by_function.setdefault(line["function"], []).append(line)
        assert line["event"] == "cache_lookup"
        assert line["lookup_s"] >= 0 and line["cache_key"]
    client_lines = [e for e in by_function["simulate"] if e.get("worker") is None]
    worker_lines = [e for e in by_function["simulate"] if e.get("worker")]
    assert [e["result"] for e in client_lines] == ["miss", "hit"]
    assert client_lines[0]["compute_s"] >= 0 and client_lines[1].get("compute_s") is None
    assert [(e["key"], e["result"]) for e in worker_lines] == [
        (first.key, "miss"),
        (second.key, "hit"),
    ]
    assert {e["task"] for e in worker_lines} == {"simulate_inside"}
    (crashed,) = by_function["crash"]
    # its cache never closed: settled when the task ended, with the time until it raised
    assert crashed["result"] == "miss" and crashed["compute_s"] >= 0

    run = orjson.loads((run_dir / "run.json").read_bytes())
    assert (run["cache_hits"], run["cache_misses"]) == (2, 3)


def test_a_stored_output_that_changed_is_a_miss(tool_cache, project_dir):
    seen = []
    cache.set_driver_sink(seen.append, None)
    try:
        target = project_dir / "out.txt"
        tool.write_output(str(target))
        assert tool.write_output(str(target)) == str(target)
        target.write_text("edited by hand")  # the cached file no longer matches its digest
        tool.write_output(str(target))
        assert target.read_text() == "fresh"
    finally:
        cache.set_driver_sink(None, None)
    assert [s["result"] for s in seen] == ["miss", "hit", "miss"]
    # the stored entry was there and could not be used; the first miss has no reason
    assert [s.get("miss_reason") for s in seen] == [None, None, "corrupt"]
    assert all(s["function"] == "write_output" for s in seen)
    assert len({s["cache_key"] for s in seen}) == 1


def test_a_function_that_raises_is_a_miss_without_compute_time(tool_cache):
    seen = []
    cache.set_driver_sink(seen.append, None)
    try:
        with pytest.raises(ValueError):
            tool.crash(7)
        gc.collect()
    finally:
        cache.set_driver_sink(None, None)
    assert [(s["function"], s["result"], s["compute_s"]) for s in seen] == [("crash", "miss", None)]


def test_uninstrument_restores_the_package(project_dir, instrumentor):
    instrumentor.instrument(runs_dir=project_dir / "runs")
    cache.set_driver_sink(lambda record: None, None)
    cache.set_driver_sink(None, None)
    assert caching.Cache is scalable_library.watched_cache_class()
    assert hasattr(ScalableClient.submit, "__wrapped__")
    instrumentor.uninstrument()
    assert caching.Cache is diskcache.Cache
    assert not hasattr(ScalableClient.submit, "__wrapped__")
    assert not hasattr(ScalableClient.map, "__wrapped__")
    assert os.listdir(project_dir / "runs") == [] if (project_dir / "runs").exists() else True
