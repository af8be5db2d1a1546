"""Run directory names and finding runs again, without Dask."""

import re
from datetime import datetime, timezone

from scalable_otel.rundir import RunDirectory, list_runs, new_run_id, slug


def test_run_id_names_the_time_and_the_project():
    when = datetime(2026, 5, 20, 3, 52, tzinfo=timezone.utc)
    run_id = new_run_id("demeter lulcc/v2", when)
    assert re.match(r"^run-20260520T035200Z-demeter-lulcc-v2-[0-9a-f]{8}$", run_id)
    assert slug("../..") == "project"


def test_runs_started_in_the_same_second_sort_by_start_time(tmp_path):
    # the random suffixes would sort "b…" before "f…"; start times say otherwise
    names = ["run-20260520T035200Z-p-ffffffff", "run-20260520T035200Z-p-00000000"]
    for i, name in enumerate(names):
        run = RunDirectory.create(tmp_path, name)
        run.write_run_json({"start_time": f"2026-05-20T03:52:00.{100000 * (i + 1):06d}Z"})
    assert [p.name for p in list_runs(tmp_path)] == names


def test_a_run_without_run_json_sorts_by_its_name_stamp(tmp_path):
    RunDirectory.create(tmp_path, "run-20260520T035200Z-p-00000000")
    later = RunDirectory.create(tmp_path, "run-20260520T035300Z-p-00000000")
    later.write_run_json({"start_time": "2026-05-20T03:53:00.000001Z"})
    (tmp_path / "not-a-run").mkdir()
    assert [p.name[:28] for p in list_runs(tmp_path)] == [
        "run-20260520T035200Z-p-00000",
        "run-20260520T035300Z-p-00000",
    ]


def _run_json(**summary):
    from scalable_otel.rundir import run_json

    return run_json(
        run_id="run-x", project="p", status="completed", started=100.0, ended=160.5,
        target="local", provider="local", host="h", pid=1, process_start_time=None,
        manifest_hash="sha256:0", trace_id="0" * 32, exporters={}, settings={},
        versions={}, summary=summary or None,
    )  # fmt: skip


def test_run_json_has_only_declared_fields_of_their_types():
    from scalable_otel.rundir import RUN_JSON_FIELDS, typed_meta

    meta = _run_json(tasks_submitted=3, tasks_completed=2, tasks_failed=1, cache_hits=0)
    assert set(meta) <= set(RUN_JSON_FIELDS)
    assert typed_meta(meta) == {k: v for k, v in meta.items() if v is not None}
    assert meta["duration_s"] == 60.5 and meta["end_time"] == "1970-01-01T00:02:40.500000Z"
    assert (meta["tasks_submitted"], meta["tasks_completed"], meta["cache_hits"]) == (3, 2, 0)


def test_a_count_the_session_never_learned_is_null_not_zero():
    lost = _run_json(status="completed", telemetry_lost=True)
    counts = ("tasks_submitted", "tasks_completed", "tasks_failed", "tasks_cancelled")
    assert [lost[name] for name in counts] == [None] * 4
    assert lost["cache_hits"] is None and lost["telemetry_lines_dropped"] is None
    assert lost["telemetry_lost"] is True
    assert _run_json()["tasks_completed"] is None  # the first write, while the run goes on
