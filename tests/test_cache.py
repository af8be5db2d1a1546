"""@cacheable: hits across runs, lookups from worker processes, verified entries."""

import orjson
import pytest

from scalable_otel import ScalableSession, cacheable
from scalable_otel.cache import CacheStore
from tests import workloads
from tests.conftest import events


def run_twice(n):
    dirs = []
    for _ in range(2):
        with ScalableSession(
            target="local", n_workers=2, threads_per_worker=1, project="cache"
        ) as s:
            assert s.gather(s.map(workloads.simulate, range(n))) == [i * 10 for i in range(n)]
        dirs.append(s.run_dir)
    return dirs


def test_second_run_hits_and_lookups_come_from_workers(project_dir):
    first, second = run_twice(6)
    misses = events(first, "cache.jsonl")
    assert len(misses) == 6 and {e["result"] for e in misses} == {"miss"}
    computed = {e["cache_key"]: e["compute_s"] for e in misses}
    hits = events(second, "cache.jsonl")
    assert len(hits) == 6 and {e["result"] for e in hits} == {"hit"}
    completed = {e["key"]: e for e in events(second, event="task_completed")}
    workers = {e["worker"] for e in events(second, "workers.jsonl", "worker_added")}
    for e in hits:
        assert e["worker"] in workers  # looked up inside a worker process
        assert e["function"] == "simulate" and e["task"] == "simulate"
        assert e["span_id"] == completed[e["key"]]["span_id"]
        # what the first run spent computing (a 50 ms sleep), less the lookup
        assert e["saved_s"] > 0.03
        assert e["saved_s"] == pytest.approx(computed[e["cache_key"]] - e["lookup_s"], abs=2e-6)
        assert e["schema_version"] == 1
    run = orjson.loads((second / "run.json").read_bytes())
    assert (run["cache_hits"], run["cache_misses"]) == (6, 0)
    assert (project_dir / ".scalable" / "cache").is_dir()


def test_lookups_in_the_client_process_are_recorded(project_dir):
    @cacheable
    def square(x):
        return x * x

    with ScalableSession(target="local", n_workers=1, project="cache") as s:
        assert square(4) == 16 and square(4) == 16
    lookups = events(s.run_dir, "cache.jsonl")
    assert [e["result"] for e in lookups] == ["miss", "hit"]
    assert "worker" not in lookups[0] and "key" not in lookups[0]


def test_key_depends_on_code_and_arguments(project_dir):
    def f(x):
        return x

    def g(x):
        return x + 0

    assert cacheable(f).cache_key((1,), {}) == cacheable(f).cache_key((1,), {})
    assert cacheable(f).cache_key((1,), {}) != cacheable(f).cache_key((2,), {})
    assert cacheable(f).cache_key((1,), {}) != cacheable(g).cache_key((1,), {})


def test_tampered_entry_is_recomputed_not_unpickled(project_dir):
    calls = []

    @cacheable
    def compute(x):
        calls.append(x)
        return x + 1

    assert compute(1) == 2 and compute(1) == 2 and calls == [1]
    store = CacheStore(project_dir / ".scalable" / "cache")
    key = compute.cache_key((1,), {})
    path = store.path(key)
    digest, header, _ = path.read_bytes().split(b"\n", 2)

    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled a forged entry",))

    import pickle

    path.write_bytes(b"\n".join([digest, header, pickle.dumps(Boom())]))  # the old HMAC
    assert compute(1) == 2 and calls == [1, 1]
    forged_header = header.replace(b'"compute_s":', b'"compute_s":1e9,"x":')
    path.write_bytes(b"\n".join([digest, forged_header, pickle.dumps(2)]))
    assert compute(1) == 2 and calls == [1, 1, 1]  # the header is signed too


def test_failed_call_is_a_recorded_miss_and_not_cached(project_dir):
    @cacheable
    def broken(x):
        raise RuntimeError("no")

    with ScalableSession(target="local", n_workers=1, project="cache") as s:
        for _ in range(2):
            with pytest.raises(RuntimeError):
                broken(1)
    assert [e["result"] for e in events(s.run_dir, "cache.jsonl")] == ["miss", "miss"]


def test_processes_racing_to_create_the_key_agree_on_it(project_dir):
    from concurrent.futures import ProcessPoolExecutor

    root = project_dir / "race-cache"
    with ProcessPoolExecutor(4) as pool:
        keys = list(pool.map(_read_secret, [str(root)] * 16))
    assert len(set(keys)) == 1 and len(keys[0]) == 32


def _read_secret(root):
    return CacheStore(root)._secret()
