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
