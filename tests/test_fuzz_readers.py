"""Fuzzing every reader of run-directory files: corrupt, torn, blank and huge lines, odd
Unicode, invalid UTF-8, fields of the wrong type, run.json and plan.json that are not
objects. Each reader must skip and count what it cannot read, or raise the package's own
one-line error, and never fail with another exception."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import traceback
from datetime import timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scalable_otel.analysis import load_run, report
from scalable_otel.analysis.advise import advise_all, format_advice
from scalable_otel.analysis.compare import compare, format_compare
from scalable_otel.analysis.export import export_parquet
from scalable_otel.analysis.html import html_report
from scalable_otel.analysis.load import read_meta, resolve_run
from scalable_otel.analysis.report import format_report
from scalable_otel.analysis.runs import format_runs, list_run_summaries
from scalable_otel.analysis.trends import format_trends, trends
from scalable_otel.errors import RunNotFound, ScalableError
from scalable_otel.exporters.columnar import write_columnar_copy
from scalable_otel.rundir import iso, iter_lines, list_runs, parse_iso, parse_line, read_lines
from tests.fuzz_strategies import (
    GARBAGE,
    RUN_NAME,
    RunFiles,
    bad_count,
    dumps,
    event_less,
    fuzz_settings,
    json_values,
    jsonl_files,
    metas,
    run_dirs,
    text,
    write_runs,
)

FUZZ = fuzz_settings(60)
CLOSED = {
    "run_id": RUN_NAME.format(day=1),
    "status": "completed",
    "start_time": "2026-01-01T00:00:00.000000Z",
    "end_time": "2026-01-01T00:01:00.000000Z",
    "duration_s": 60.0,
    "target": "local",
    "provider": "local",
}


class Scratch:
    """A fresh runs directory per example (hypothesis runs many in one test)."""

    def __enter__(self) -> Path:
        self.base = Path(tempfile.mkdtemp(prefix="scalable-fuzz-"))
        return self.base / "runs"

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


# --- rundir: parse_iso, iter_lines, read_lines ----------------------------------------------


@FUZZ
@given(st.one_of(text, json_values, st.datetimes(), st.datetimes(timezones=st.timezones())))
def test_parse_iso_gives_seconds_or_none(value):
    result = parse_iso(value)
    assert result is None or (isinstance(result, float) and math.isfinite(result))


@FUZZ
@given(st.floats(min_value=-1e10, max_value=1e10, allow_nan=False))
def test_parse_iso_reads_what_iso_writes(seconds):
    # to the microsecond, and to the float's own resolution at that size
    assert parse_iso(iso(seconds)) == pytest.approx(seconds, abs=1e-6 + abs(seconds) * 1e-15)


@FUZZ
@given(st.datetimes(timezones=st.timezones()))
def test_parse_iso_reads_any_offset(moment):
    text = moment.isoformat()
    assert parse_iso(text) == pytest.approx(moment.astimezone(timezone.utc).timestamp())


@FUZZ
@given(jsonl_files())
def test_read_lines_counts_every_unreadable_line(tmp_path_factory, file):
    content, items = file
    path = tmp_path_factory.mktemp("lines") / "tasks.jsonl"
    path.write_bytes(content)
    records, bad = read_lines(path)
    assert bad == bad_count(items)
    assert len(records) == sum(line.kind in ("ok", "nonstandard") for line in items)
    assert all(line.record in records for line in items if line.kind == "nonstandard")
    assert all(isinstance(r, dict) for r in records)


@FUZZ
@given(jsonl_files(), st.data())
def test_iter_lines_with_a_limit_reads_the_file_as_it_was(tmp_path_factory, file, data):
    content, _ = file
    limit = data.draw(st.integers(0, len(content) + 2))
    folder = tmp_path_factory.mktemp("limit")
    (folder / "whole.jsonl").write_bytes(content)
    (folder / "cut.jsonl").write_bytes(content[:limit])
    assert list(iter_lines(folder / "whole.jsonl", limit)) == list(iter_lines(folder / "cut.jsonl"))


@FUZZ
@given(jsonl_files(), st.data())
def test_iter_lines_containing_reads_the_lines_holding_the_bytes(tmp_path_factory, file, data):
    content, _ = file
    limit = data.draw(st.none() | st.integers(0, len(content) + 2))
    needle = data.draw(st.sampled_from([b"task", b"event", b'"', b"\\", b"x"]))
    block = data.draw(st.integers(1, 64))
    path = tmp_path_factory.mktemp("containing") / "tasks.jsonl"
    path.write_bytes(content)
    expected = []
    for raw in (content if limit is None else content[:limit]).split(b"\n"):
        raw = raw.strip()
        if raw and needle in raw:
            value = parse_line(raw)
            expected.append(value if isinstance(value, dict) else None)
    assert list(iter_lines(path, limit, containing=needle, block=block)) == expected


def test_iter_lines_containing_finds_lines_across_block_edges(tmp_path):
    path = tmp_path / "tasks.jsonl"
    lines = [{"event": "task_started", "key": f"k{i}", "pad": "x" * (i % 13)} for i in range(200)]
    lines[57]["event"] = lines[131]["event"] = "task_failed"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in lines) + b'{"task_failed": 1')
    for block in (7, 64, 1 << 20):
        found = list(iter_lines(path, containing=b"task_failed", block=block))
        assert found == [lines[57], lines[131], None]  # and the torn last line


def test_read_lines_of_a_missing_file_is_empty(tmp_path):
    assert read_lines(tmp_path / "tasks.jsonl") == ([], 0)


# --- run.json --------------------------------------------------------------------------------

META_KINDS = {
    "run_id": str,
    "project": str,
    "status": str,
    "start_time": str,
    "end_time": str,
    "target": str,
    "provider": str,
    "host": str,
    "duration_s": float,
    "process_start_time": float,
    "pid": int,
    "tasks_submitted": int,
    "tasks_completed": int,
    "tasks_failed": int,
    "tasks_cancelled": int,
    "cache_hits": int,
    "cache_misses": int,
    "telemetry_lines_dropped": int,
    "telemetry_lost": bool,
    "settings": dict,
}


def _kind_ok(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


@FUZZ
@given(st.one_of(metas().map(dumps), json_values.map(dumps), st.sampled_from(GARBAGE)))
@example(dumps([1, 2]))
@example(dumps(None))
@example(dumps({"duration_s": "60", "status": ["completed"], "start_time": 5}))
def test_read_meta_gives_an_object_whose_known_fields_have_their_types(tmp_path_factory, raw):
    run = tmp_path_factory.mktemp("meta") / RUN_NAME.format(day=1)
    run.mkdir()
    (run / "run.json").write_bytes(raw)
    meta = read_meta(run)
    assert isinstance(meta, dict)
    for name, kind in META_KINDS.items():
        if meta.get(name) is not None:
            assert _kind_ok(meta[name], kind), (name, meta[name])


@fuzz_settings(30)
@given(st.lists(st.one_of(metas().map(dumps), json_values.map(dumps)), min_size=2, max_size=4))
@example([dumps([1]), dumps({"start_time": 5}), dumps({"start_time": "2026"})])
def test_list_runs_orders_runs_whatever_their_run_json_holds(tmp_path_factory, raws):
    root = tmp_path_factory.mktemp("order")
    for day, raw in enumerate(raws, 1):
        (root / RUN_NAME.format(day=day)).mkdir()
        (root / RUN_NAME.format(day=day) / "run.json").write_bytes(raw)
    assert sorted(p.name for p in list_runs(root)) == sorted(p.name for p in root.iterdir())


# --- what reports count ----------------------------------------------------------------------


@fuzz_settings(35)
@given(jsonl_files(), jsonl_files(), jsonl_files(), jsonl_files())
def test_report_counts_the_lines_it_skips(tasks, cache, workers, resources):
    with Scratch() as root:
        files = {"tasks.jsonl": tasks, "cache.jsonl": cache, "workers.jsonl": workers}
        files["resources.jsonl"] = resources
        (run,) = write_runs(root, [RunFiles(dumps(CLOSED), files)])
        summary = report(load_run(run))
        expected = {
            "tasks.jsonl": bad_count(tasks[1]) + event_less(tasks[1]),
            "cache.jsonl": bad_count(cache[1]) + event_less(cache[1]),
            "workers.jsonl": bad_count(workers[1]),
        }
        assert summary["skipped_lines"] == {k: n for k, n in expected.items() if n}
        text = format_report(summary)
        if expected["tasks.jsonl"]:
            assert f"{expected['tasks.jsonl']} in tasks.jsonl" in text.splitlines()[-1]
        history = trends(root).runs[0]
        assert history.skipped_lines == summary["skipped_lines"]
        # the frames of load_run skip what does not parse as an object
        loaded = load_run(run)
        for name in ("tasks", "cache", "workers", "resources"):
            getattr(loaded, name)
        frames = {f"{n}.jsonl": bad_count(files[f"{n}.jsonl"][1]) for n in ("tasks", "cache")}
        frames |= {f"{n}.jsonl": bad_count(files[f"{n}.jsonl"][1]) for n in ("workers",)}
        frames["resources.jsonl"] = bad_count(resources[1])
        assert loaded.skipped_lines == {k: n for k, n in frames.items() if n}
        unreadable = bad_count(resources[1]) + event_less(resources[1])
        notes = [note for a in _advice(root) for note in a.notes if "unreadable" in note]
        if unreadable and notes:
            assert all(note.startswith(f"skipped {unreadable} unreadable line") for note in notes)


def _advice(root):
    try:
        return advise_all(root)
    except ScalableError:
        return []


@fuzz_settings(30)
@given(jsonl_files(), jsonl_files(), jsonl_files())
def test_a_columnar_copy_reports_what_the_jsonl_does(tasks, cache, resources):
    with Scratch() as root:
        files = {"tasks.jsonl": tasks, "cache.jsonl": cache, "resources.jsonl": resources}
        (run,) = write_runs(root, [RunFiles(dumps(CLOSED), files)])
        before = report(load_run(run))
        write_columnar_copy(run, min_bytes=0)
        after = report(load_run(run))
        assert json.dumps(after, default=str) == json.dumps(before, default=str)  # NaN as NaN


# --- every reader, on whole run directories ---------------------------------------------------


def _every_reader(root: Path, runs: list[Path]) -> None:
    """Every answer the package gives from these runs (ScalableError is a fine answer)."""
    steps = [
        lambda: [format_report(report(load_run(r))) for r in runs],
        lambda: format_compare(compare(load_run(runs[0]), load_run(runs[-1]))),
        lambda: format_trends(trends(root)),
        lambda: [format_advice(a) for a in advise_all(root)],
        lambda: format_runs(list_run_summaries(root)),
        lambda: [export_parquet(r, root.parent / "parquet" / r.name) for r in runs],
        lambda: [html_report(load_run(r)) for r in runs],
        lambda: [
            (x.tasks, x.resources, x.workers, x.cache, x.failures, x.manifest, x.status)
            for x in map(load_run, runs)
        ],
    ]
    for step in steps:
        try:
            step()
        except ScalableError as exc:
            assert "\n" not in str(exc)
        except Exception as exc:  # short, so that a RecursionError is quick to show
            where = "".join(traceback.format_exception(exc, limit=-8))
            raise AssertionError(f"{type(exc).__name__} from a reader:\n{where[-3000:]}") from None


@fuzz_settings(25)
@given(st.lists(run_dirs(), min_size=1, max_size=3))
def test_every_reader_survives_fuzzed_run_directories(runs):
    with Scratch() as root:
        _every_reader(root, write_runs(root, runs))


META_CASES = [
    [1, 2],
    None,
    "a string",
    {"start_time": 5, "end_time": [1], "duration_s": "60"},
    {"status": ["completed"], "run_id": {"a": 1}, "project": [1], "target": [1]},
    {"status": "running", "pid": "12", "host": 7, "process_start_time": "x"},
    {"tasks_completed": "5", "tasks_failed": None, "tasks_submitted": 2.5, "cache_misses": "1"},
    {"provider": {"a": 1}, "target": {"b": 2}, "telemetry_lines_dropped": "3"},
    {"started_at": 5, "finished_at": [1], "status": ["x"], "target_name": {}},  # a beta
    {"started_at": "2026-01-01T00:00:00Z", "duration_s": "1", "project_name": [1]},
]
TASK = {"timestamp": "2026-01-01T00:00:01.000000Z", "task": "run_simulation", "key": "k-1"}
COMPLETED = {**TASK, "event": "task_completed", "duration_s": 1.0}
WRONG_LINES = {
    "tasks.jsonl": [
        {**TASK, "event": "task_completed", "duration_s": 1.0, "worker": "tcp://a:1"},
        {**TASK, "event": ["task_completed"], "duration_s": "1.5", "attempt": "x"},
        {**TASK, "event": "task_started", "worker": ["tcp://a:1"], "key": {"k": 1}},
        {**TASK, "event": "task_failed", "timestamp": 5, "attempt": 2**70, "args": "x"},
    ],
    "workers.jsonl": [
        {**TASK, "event": "worker_added", "worker": "tcp://a:1", "nthreads": "2"},
        {**TASK, "event": ["worker_added"], "span_id": [1], "worker": {"a": 1}},
        {**TASK, "event": "worker_removed", "span_id": {"a": 1}, "timestamp": [1]},
        {**TASK, "event": "worker_added", "memory_limit": "8G", "nthreads": 2**70},
        {**TASK, "event": "worker_added", "span_id": ["s"], "worker": ["tcp://a:1"]},
    ],
    "resources.jsonl": [
        {**TASK, "event": "task_resources", "cpus_used": "2", "peak_memory_bytes": [1]},
        {**TASK, "event": "task_resources", "task": ["x"], "cpu_shared": "yes"},
        {**TASK, "event": "resource_sample", "worker": [1], "cpu_percent": "50"},
        {**TASK, "event": "resource_sample", "worker": "tcp://a:1", "worker_name": []},
    ],
    "cache.jsonl": [
        {**TASK, "event": "cache_lookup", "result": ["hit"], "saved_s": "1"},
        {**TASK, "event": "cache_lookup", "result": "hit", "function": {"f": 1}},
    ],
    "failures.jsonl": [
        {**TASK, "event": "task_failed", "traceback": ["x"], "caused_by": "y", "attempt": "1"},
        {**TASK, "event": "task_failed", "timestamp": {"a": 1}, "error_message": 5},
    ],
}


@pytest.mark.parametrize("meta", META_CASES, ids=range(len(META_CASES)))
def test_every_reader_survives_run_json_fields_of_the_wrong_type(tmp_path, meta):
    root = tmp_path / "runs"
    jsonl = {
        name: (b"\n".join(dumps(r) for r in lines) + b"\n", [])
        for name, lines in WRONG_LINES.items()
    }
    first = RunFiles(dumps(meta), jsonl, manifest_yaml=b"tasks: [a]\ntargets: [x]\n")
    second = RunFiles(dumps(CLOSED | {"start_time": 7}), jsonl, plan_json=dumps([1]))
    _every_reader(root, write_runs(root, [first, second]))


@pytest.mark.parametrize("name", sorted(WRONG_LINES))
def test_every_reader_survives_lines_of_the_wrong_type(tmp_path, name):
    root = tmp_path / "runs"
    content = b"\n".join(dumps(r) for r in WRONG_LINES[name]) + b"\n"
    runs = write_runs(root, [RunFiles(dumps(CLOSED), {name: (content, [])})])
    _every_reader(root, runs)


@pytest.mark.filterwarnings("error")
def test_a_timestamp_that_is_not_text_is_no_time(tmp_path):
    stamps = [1e300, 5, [1], {"a": 1}, True, "2026-01-01T00:00:01.000000Z"]
    content = b"".join(dumps(COMPLETED | {"timestamp": t}) + b"\n" for t in stamps)
    (run,) = write_runs(
        tmp_path / "runs", [RunFiles(dumps(CLOSED), {"tasks.jsonl": (content, [])})]
    )
    times = load_run(run).tasks["timestamp"]
    assert times.isna().tolist() == [True] * 5 + [False]
    html_report(load_run(run))


@pytest.mark.parametrize(
    "lines, column, expected",
    [
        ([{"timestamp": "2026-02-30T00:00:00Z"}], "timestamp", ["2026-02-30T00:00:00Z"]),
        ([{"timestamp": "2026-13-45T25:61:61Z"}], "timestamp", ["2026-13-45T25:61:61Z"]),
        ([{"duration_s": 2**63 - 1}], "duration_s", [float(2**63 - 1)]),
        ([{"x": 1.5}, {"x": 2**60}], "x", [1.5, float(2**60)]),  # batches of one line
        ([{"args": {"a": 0.5}}, {"args": {"a": 2**60}}], "args", [{"a": 0.5}, {"a": 2.0**60}]),
    ],
)
def test_export_of_values_parquet_types_cannot_take_as_they_are(tmp_path, lines, column, expected):
    import pyarrow.parquet as pq

    content = b"".join(dumps(line) + b"\n" for line in lines)
    (run,) = write_runs(
        tmp_path / "runs", [RunFiles(dumps(CLOSED), {"tasks.jsonl": (content, [])})]
    )
    files = export_parquet(run, tmp_path / "out", batch_size=1)
    assert pq.read_table(files["tasks"]).column(column).to_pylist() == expected


def test_an_unknown_task_is_one_line_whatever_the_known_names(tmp_path):
    from scalable_otel.analysis.advise import advise
    from scalable_otel.analysis.trends import UnknownTask

    odd = ["two\nlines", "tab\there", "rtl\u202e", "nul\x00"]
    tasks = b"".join(dumps(COMPLETED | {"task": name}) + b"\n" for name in odd)
    measured = {"event": "task_resources", "cpus_used": 1.0, "peak_memory_bytes": 1e9}
    resources = b"".join(dumps(measured | {"task": name}) + b"\n" for name in odd)
    files = {"tasks.jsonl": (tasks, []), "resources.jsonl": (resources, [])}
    root = tmp_path / "runs"
    write_runs(root, [RunFiles(dumps(CLOSED), files)])
    for call in (lambda: trends(root, task="nope"), lambda: advise("nope", root)):
        with pytest.raises(ScalableError) as caught:
            call()
        assert len(str(caught.value).splitlines()) == 1
        assert "'two\\nlines'" in str(caught.value)
    assert UnknownTask


@pytest.mark.parametrize(
    "snapshot",
    [
        pytest.param(b"- " * 2000 + b"x\n", id="nested-too-deeply"),
        pytest.param(b"tasks: {t: 1}\ncomponents: {c: " + b"9" * 5000 + b"}\n", id="5000-digits"),
        pytest.param(b"tasks: [a, b]\ntargets: 7\n", id="not-mappings"),
    ],
)
def test_a_manifest_snapshot_that_cannot_be_read_is_no_manifest(tmp_path, snapshot):
    from scalable_otel.analysis.advise import advise

    measured = {**TASK, "event": "task_resources", "cpus_used": 1.0, "peak_memory_bytes": 1e9}
    resources = b"".join(dumps(measured) + b"\n" for _ in range(3))
    files = {"resources.jsonl": (resources, [])}
    root = tmp_path / "runs"
    (run,) = write_runs(root, [RunFiles(dumps(CLOSED), files, manifest_yaml=snapshot)])
    assert load_run(run).manifest is None or "tasks" in load_run(run).manifest
    assert report(load_run(run))["cost"]["usd"] == 0.0
    assert advise("run_simulation", root).can_advise


# --- huge lines and invalid UTF-8 --------------------------------------------------------------


@pytest.mark.parametrize(
    "big",
    [
        pytest.param(dumps(COMPLETED | {"args": {"x": "a" * 5_000_000}}), id="5MB-object"),
        pytest.param(b'{"args": "' + b"a" * 17_000_000, id="17MB-torn"),
        pytest.param(b"\xff" + b"a" * 5_000_000, id="5MB-invalid-utf8"),
    ],
)
def test_huge_lines(tmp_path, big):
    root = tmp_path / "runs"
    content = dumps(COMPLETED) + b"\n" + big + b"\n" + b"{torn\n" + dumps(COMPLETED) + b"\n"
    whole = big.endswith(b"}")
    files = {name: (content, []) for name in ("tasks.jsonl", "cache.jsonl", "workers.jsonl")}
    (run,) = write_runs(root, [RunFiles(dumps(CLOSED), files)])
    summary = report(load_run(run))
    assert summary["tasks"]["completed"] == 2 + whole
    assert summary["skipped_lines"] == dict.fromkeys(files, 2 - whole)
    _every_reader(root, [run])


# --- traces.otlp.jsonl (what export --otlp replays) ----------------------------------------------

otlp_documents = st.recursive(
    st.one_of(json_values, st.sampled_from(["0" * 32, "ab" * 8, "zz" * 8, "AAAA"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=2),
        st.dictionaries(
            st.sampled_from(
                ["resourceSpans", "scopeSpans", "spans", "links", "traceId", "spanId"]
                + ["parentSpanId", "attributes", "key", "value", "kvlistValue", "values", "name"]
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=12,
)


@FUZZ
@given(st.one_of(otlp_documents.map(dumps), st.sampled_from(GARBAGE)))
def test_an_otlp_line_is_a_request_or_a_value_error(raw):
    from scalable_otel.exporters.otlp_json import decode_otlp_json

    try:
        decode_otlp_json(raw)
    except ValueError as exc:
        assert "\n" not in str(exc)


# --- naming runs -------------------------------------------------------------------------------

SPECS = st.one_of(
    text,
    st.sampled_from(
        ["../x", "/etc", "", " ", "run-\n", "run-*", "run-[0-9]*", "run-?", ".", "..", "~", "/"]
    ),
    st.sampled_from([RUN_NAME.format(day=1), "run-2026", "fuzz-00000001", "00000002"]),
)


@FUZZ
@given(SPECS)
@example("")
@example("a\x00b")
@example("/\n")
@example("x/a\x00b")
@example("x/" + "a" * 5000)
def test_resolve_run_finds_a_run_of_the_root_or_says_why_not(tmp_path_factory, spec):
    root = tmp_path_factory.mktemp("resolve") / "runs"
    write_runs(root, [RunFiles(dumps(CLOSED)), RunFiles(None)])
    try:
        path = resolve_run(spec, root, inside_root=True)
    except RunNotFound as exc:
        assert "\n" not in str(exc)
        return
    assert spec.strip()
    assert path.parent.resolve() == root.resolve()


@pytest.mark.parametrize("spec", ["", " ", "\n"])
def test_an_empty_run_id_is_not_a_prefix_of_every_run(tmp_path, spec):
    root = tmp_path / "runs"
    write_runs(root, [RunFiles(dumps(CLOSED))])
    with pytest.raises(RunNotFound, match="empty run id"):
        resolve_run(spec, root, inside_root=True)
