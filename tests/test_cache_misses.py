"""Why the cache missed: each reason from a real two-run workflow on worker processes, the
report and HTML page that count them, and an index that concurrent savers keep readable."""

import hashlib
import importlib
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import orjson
from click.testing import CliRunner

from scalable_otel import ScalableSession
from scalable_otel import semconv as sc
from scalable_otel.analysis import load_run, report
from scalable_otel.analysis.cache_misses import miss_reasons
from scalable_otel.analysis.html import html_report
from scalable_otel.cache import CacheStore, cacheable
from scalable_otel.cache_index import CacheIndex, argument_tokens
from scalable_otel.cli import main
from scalable_otel.exporters.columnar import write_columnar_copy
from scalable_otel.jsonl_scan import connection
from tests import workloads
from tests.conftest import events


def run(fn, scenarios, **kwargs):
    """One run of `fn` over `scenarios` on a worker process; its run directory."""
    with ScalableSession(target="local", n_workers=1, threads_per_worker=1, project="why") as s:
        s.gather(s.map(fn, scenarios, **kwargs))
    return s.run_dir


def lookups(run_dir):
    return sorted(events(run_dir, "cache.jsonl"), key=lambda e: e["cache_key"])


def cache_root(project_dir):
    return CacheStore(project_dir / ".scalable" / "cache")


def test_first_run_misses_are_first(project_dir):
    first = run(workloads.simulate, [1, 2, 3])
    assert [(e["result"], e["miss_reason"]) for e in lookups(first)] == [("miss", "first")] * 3
    assert all("miss_arguments" not in e for e in lookups(first))
    second = run(workloads.simulate, [1, 2, 3])
    assert all(e["result"] == "hit" and "miss_reason" not in e for e in lookups(second))
    summary = report(load_run(first))
    assert summary["cache"]["miss_reasons"] == {"first": 3}
    # the hits line already says it is a first run: the misses line stays the tutorial's
    out = CliRunner().invoke(main, ["report", first.name]).output
    assert "  Misses:   3\n" in out


def test_other_arguments_name_the_argument_that_differs(project_dir):
    run(workloads.simulate, [1, 2, 3])
    second = run(workloads.simulate, [1, 2, 3], years=20)
    missed = lookups(second)
    assert [e["miss_reason"] for e in missed] == ["arguments"] * 3
    assert [e["miss_arguments"] for e in missed] == [["years"]] * 3
    assert {e["task"] for e in missed} == {"simulate"}  # looked up inside the tasks

    summary = report(load_run(second))["cache"]
    assert summary["miss_reasons"] == {"arguments": 3}
    assert summary["miss_arguments"] == {"years": 3}
    cli = CliRunner()
    out = cli.invoke(main, ["report", second.name]).output
    assert "  Misses:   3 (arguments 3: years)\n" in out
    data = orjson.loads(cli.invoke(main, ["report", second.name, "--format", "json"]).output)
    assert data["cache"]["miss_reasons"] == {"arguments": 3}
    page = html_report(load_run(second))
    assert 'id="cache-misses"' in page and "years (3)" in page

    # the columnar copy a large run gets holds the reasons; a copy made before they
    # existed lacks their columns, and the JSONL is read instead
    (copy,) = [c for c in write_columnar_copy(second, min_bytes=0) if c.stem == "cache"]
    assert miss_reasons(load_run(second))["arguments"] == {"years": 3}
    connection().execute(
        f"COPY (SELECT * EXCLUDE (miss_reason, miss_arguments) FROM read_parquet('{copy}')) "
        f"TO '{copy}.old' (FORMAT parquet)"
    )
    mtime = copy.stat().st_mtime_ns
    os.replace(f"{copy}.old", copy)
    os.utime(copy, ns=(mtime + 1, mtime + 1))
    assert miss_reasons(load_run(second)) == {
        "reasons": {"arguments": 3},
        "arguments": {"years": 3},
    }


def test_changed_code_is_code(project_dir, monkeypatch):
    module_dir = project_dir / "user_code"
    module_dir.mkdir()
    source = module_dir / "why_model.py"
    monkeypatch.syspath_prepend(str(module_dir))  # worker processes start with this path

    def write_model(body):
        source.write_text(
            f"from scalable_otel import cacheable\n\n@cacheable\ndef model(x):\n    {body}\n"
        )
        shutil.rmtree(module_dir / "__pycache__", ignore_errors=True)
        importlib.invalidate_caches()
        if "why_model" in sys.modules:
            return importlib.reload(sys.modules["why_model"])
        return importlib.import_module("why_model")

    try:
        first = run(write_model("return x * 2").model, [1, 2])
        second = run(write_model("return x * 2 + 0  # a fix").model, [1, 2, 3])
    finally:
        sys.modules.pop("why_model", None)
    assert [e["miss_reason"] for e in lookups(first)] == ["first"] * 2
    by_reason = sorted((e["miss_reason"], e.get("miss_arguments")) for e in lookups(second))
    # 1 and 2 were stored by the old code; 3 never was: the nearest entry differs in `x`
    assert by_reason == [("arguments", ["x"]), ("code", None), ("code", None)]
    assert report(load_run(second))["cache"]["miss_reasons"] == {"arguments": 1, "code": 2}


def test_a_deleted_entry_is_evicted(project_dir):
    first = run(workloads.simulate, [1, 2, 3])
    gone = lookups(first)[0]["cache_key"]
    cache_root(project_dir).path(gone).unlink()
    second = run(workloads.simulate, [1, 2, 3])
    assert [(e["cache_key"], e["result"], e.get("miss_reason")) for e in lookups(second)] == [
        (e["cache_key"], "miss", "evicted")
        if e["cache_key"] == gone
        else (e["cache_key"], "hit", None)
        for e in lookups(first)
    ]
    out = CliRunner().invoke(main, ["report", second.name]).output
    assert "  Misses:   1 (evicted 1)\n" in out


def test_a_damaged_entry_is_corrupt(project_dir):
    first = run(workloads.simulate, [1, 2])
    damaged = lookups(first)[1]["cache_key"]
    path = cache_root(project_dir).path(damaged)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # a flipped byte in the pickle: verification fails
    path.write_bytes(bytes(data))
    second = run(workloads.simulate, [1, 2])
    missed = [e for e in lookups(second) if e["result"] == "miss"]
    assert [(e["cache_key"], e["miss_reason"]) for e in missed] == [(damaged, "corrupt")]
    third = run(workloads.simulate, [1, 2])  # the entry was written again
    assert {e["result"] for e in lookups(third)} == {"hit"}


def test_a_signed_entry_that_does_not_unpickle_is_corrupt(project_dir):
    seen = []
    from scalable_otel import cache

    @cacheable
    def compute(x):
        return x + 1

    store = cache_root(project_dir)
    key = compute.cache_key((1,), {})
    cache.set_driver_sink(seen.append, None)
    try:
        compute(1)
        header = orjson.dumps({"function": "compute", "compute_s": 0.1, "created": 0})
        store.write_signed(store.path(key), header + b"\n" + b"not a pickle")
        assert compute(1) == 2
    finally:
        cache.set_driver_sink(None, None)
    assert [(s["result"], s["cache_key"], s.get("miss_reason")) for s in seen] == [
        ("miss", key, "first"),
        ("miss", key, "corrupt"),  # with its key: not a lookup that failed
    ]


def test_a_lookup_record_holds_only_declared_fields(project_dir):
    from scalable_otel import cache

    seen = []

    @cacheable
    def f(a, b=1):
        return a + b

    f(1)  # stored before the run: no sink to report to yet
    cache.set_driver_sink(seen.append, None)
    try:
        f(2)
    finally:
        cache.set_driver_sink(None, None)
    assert all(set(s) <= set(sc.CACHE_LOOKUP_FIELDS) for s in seen)
    assert seen[0]["miss_arguments"] == ["a"]


def test_runs_without_reasons_count_as_unknown(project_dir):
    second_dir = run(workloads.simulate, [1, 2])
    path = second_dir / "cache.jsonl"
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    for line in lines:
        line.pop("miss_reason", None)  # as a run of an earlier version wrote them
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    assert miss_reasons(load_run(second_dir)) == {"reasons": {"unknown": 2}, "arguments": {}}
    out = CliRunner().invoke(main, ["report", second_dir.name]).output
    assert "  Misses:   2\n" in out
    assert 'id="cache-misses"' not in html_report(load_run(second_dir))


def test_arguments_are_named_by_the_signature(project_dir):
    def f(scenario, years=10, *rest, **options):
        return scenario

    assert set(argument_tokens(f, (1,), {})) == {"scenario", "years", "rest", "options"}
    assert argument_tokens(f, (1,), {}) == argument_tokens(f, (), {"scenario": 1})
    assert set(argument_tokens(len, (1, 2), {"z": 3})) == {"arg0", "arg1", "z"}  # no binding


def _key(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _save_many(root, worker):
    """Save entries of one function from one process: 20 of its own, 20 shared by all."""
    store = CacheStore(root)
    index = CacheIndex(store, "tests.model")
    for i in range(40):
        x = i if i < 20 else 1000 + i
        tokens = {"x": str(x) if i >= 20 else f"{worker}-{i}"}
        key = _key(f"{worker}-{i}" if i < 20 else f"shared-{i}")
        store.save(key, x, {"function": "model"})
        index.add(key, "code-1", tokens)
    return worker


def test_concurrent_saves_leave_a_readable_index(project_dir):
    root = project_dir / "shared-cache"
    with ProcessPoolExecutor(4) as pool:
        assert sorted(pool.map(_save_many, [str(root)] * 8, range(8))) == list(range(8))
    store = CacheStore(root)
    index = CacheIndex(store, "tests.model")
    files = sorted(index.folder.iterdir())
    records = [index._read(f.name) for f in files]  # all whole and verified: no temporaries
    assert all(r is not None for r in records)
    assert len({r["key"] for r in records}) == 8 * 20 + 20  # every entry saved is indexed
    # each saved key is known: a deleted one is evicted, an unknown argument is named
    store.path(_key("3-5")).unlink()
    later = time.time() + 60  # a run that began after the saves
    assert index.why(_key("3-5"), "code-1", {"x": "3-5"}, later) == ("evicted", None)
    assert index.why("ab" * 32, "code-1", {"x": "new"}, later) == ("arguments", ["x"])
    assert index.why("cd" * 32, "code-2", {"x": "1025"}, later) == ("code", None)
    # a run that began before the saves: none of them could have been found
    assert index.why("ab" * 32, "code-1", {"x": "new"}, 0.0) == ("first", None)
    assert CacheIndex(store, "tests.other").why("ab" * 32, "code-1", {"x": "1"}, later) == (
        "first",
        None,
    )


def test_the_nearest_entry_names_the_fewest_arguments(project_dir):
    store = CacheStore(project_dir / "cache")
    index = CacheIndex(store, "tests.nearest")
    stored = [
        {"a": "1", "b": "1", "c": "1"},
        {"a": "2", "b": "2", "c": "9"},
        {"a": "5", "b": "6", "c": "7"},
    ]
    for i, tokens in enumerate(stored):
        index.add(_key(f"nearest-{i}"), "code-1", tokens)
    later = time.time() + 60
    # one argument apart: found by key
    assert index.why(_key("x"), "code-1", {"a": "2", "b": "2", "c": "1"}, later) == (
        "arguments",
        ["c"],
    )
    # two apart from the first entry, three from the others
    assert index.why(_key("y"), "code-1", {"a": "3", "b": "3", "c": "1"}, later) == (
        "arguments",
        ["a", "b"],
    )
    # an entry of the same code is nearer than one of other code as far apart
    index.add(_key("other-code"), "code-0", {"a": "3", "b": "3", "c": "2"})
    index.add(_key("same-code"), "code-1", {"a": "3", "b": "4", "c": "1"})
    later = time.time() + 61
    assert index.why(_key("z"), "code-1", {"a": "3", "b": "3", "c": "1"}, later) == (
        "arguments",
        ["b"],
    )


def test_log_records_carry_the_reason(project_dir):
    """The OTel log events of lookups have the line's fields: the reason, and the
    argument names as a sequence attribute."""
    from opentelemetry.sdk._logs.export import InMemoryLogExporter, SimpleLogRecordProcessor

    from scalable_otel import PipelineOptions

    exporter = InMemoryLogExporter()

    @cacheable
    def scale(x, factor=2):
        return x * factor

    scale(1)  # stored before the run
    pipeline = PipelineOptions(log_processors=[SimpleLogRecordProcessor(exporter)])
    with ScalableSession(target="local", n_workers=1, project="why", pipeline=pipeline) as s:
        scale(1, factor=3)
    records = [
        r.log_record
        for r in exporter.get_finished_logs()
        if r.log_record.event_name == sc.CACHE_LOOKUP
    ]
    assert [
        (r.attributes["miss_reason"], tuple(r.attributes["miss_arguments"])) for r in records
    ] == [("arguments", ("factor",))]
    (line,) = events(s.run_dir, "cache.jsonl")
    assert (line["miss_reason"], line["miss_arguments"]) == ("arguments", ["factor"])
