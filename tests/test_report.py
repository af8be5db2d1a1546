"""The report's figures on small hand-written runs, where each figure is known."""

import json

from scalable_otel.analysis import load_run, report


def write_run(folder, tasks):
    folder.mkdir()
    with open(folder / "tasks.jsonl", "w") as f:
        for line in tasks:
            f.write(json.dumps(line) + "\n")
    return folder


def test_slowest_task_without_args_keeps_its_own_fields(tmp_path):
    run = write_run(
        tmp_path / "run-20260520T035200Z-p-a1b2c3d4",
        [
            {"event": "task_completed", "task": "sim", "key": "sim-1", "duration_s": 1.0,
             "args": {"scenario_id": 4}},
            {"event": "task_completed", "task": "chunk", "key": "chunk-1", "duration_s": 2.0,
             "args": None},
            {"event": "task_completed", "task": "sim", "key": "sim-2", "duration_s": 2.0 - 1e-9,
             "args": {"scenario_id": 5}},
        ],
    )  # fmt: skip
    slowest = report(load_run(run))["tasks"]["max_duration"]
    assert slowest == {"task": "chunk", "key": "chunk-1", "duration_s": 2.0, "args": {}}


def test_slowest_task_with_args(tmp_path):
    run = write_run(
        tmp_path / "run-20260520T035200Z-p-a1b2c3d4",
        [
            {"event": "task_completed", "task": "sim", "key": "sim-1", "duration_s": 3.5,
             "args": {"scenario_id": 47, "name": 'a"b\u00e9'}},
            {"event": "task_failed", "task": "sim", "key": "sim-2", "duration_s": 9.0},
        ],
    )  # fmt: skip
    summary = report(load_run(run))
    assert summary["tasks"]["max_duration"]["args"] == {"scenario_id": 47, "name": 'a"b\u00e9'}
    assert summary["tasks"]["busy_s"] == 12.5  # failed attempts computed too
    assert summary["tasks"]["avg_duration_s"] == 3.5
