"""Parquet export of run directories: a real run round-tripped, and hand-written edge cases."""

import os

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scalable_otel.analysis import export
from scalable_otel.analysis.export import TIMESTAMP, export_all, export_parquet
from scalable_otel.errors import RunNotFound
from scalable_otel.rundir import JSONL_FILES, RunDirectory, read_lines
from tests.conftest import read_jsonl

RUN_ID = "run-20260520T035200Z-export-0a1b2c3d"


def _iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _line(i: int, **fields) -> dict:
    return {
        "schema_version": 1,
        "timestamp": f"2026-05-20T03:52:{i % 60:02d}.{i:06d}Z",
        "event": "task_completed",
        "run_id": RUN_ID,
        **fields,
    }


def _run(tmp_path, tasks=(), raw: bytes = b"", meta: dict | None = None):
    """A run directory whose tasks.jsonl holds `tasks` then the bytes `raw`."""
    run = RunDirectory.create(tmp_path / "runs", RUN_ID)
    run.write_run_json(
        meta
        if meta is not None
        else {
            "run_id": RUN_ID,
            "status": "completed",
            "start_time": "2026-05-20T03:52:00.000001Z",
            "end_time": "2026-05-20T03:52:04.500001Z",
            "duration_s": 4.5,
            "tasks_completed": len(tasks),
            "settings": {"n_workers": 2},
        }
    )
    with open(run.file("tasks.jsonl"), "ab") as f:
        f.write(b"".join(orjson.dumps(t) + b"\n" for t in tasks) + raw)
    return run.path


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# --- a real run -----------------------------------------------------------------------------


def test_a_real_run_round_trips(demo_run, tmp_path):
    out = tmp_path / "export"
    files = export_parquet(demo_run, out)

    assert files.bad_lines == {}
    assert sorted(files) == ["cache", "failures", "metrics", "resources", "run", "tasks", "workers"]
    for name in JSONL_FILES:
        lines = read_jsonl(demo_run / name)
        table = pq.read_table(files[name.removesuffix(".jsonl")])
        assert table.num_rows == len(lines) == files.rows[name.removesuffix(".jsonl")]
        assert table.schema.field("timestamp").type == TIMESTAMP
        assert [_iso(t) for t in table["timestamp"].to_pylist()] == [
            line["timestamp"] for line in lines
        ]
        assert table["event"].to_pylist() == [line["event"] for line in lines]
    assert _leftovers(out) == []
    assert oct(os.stat(files["tasks"]).st_mode & 0o777) == "0o600"

    tasks = pq.read_table(files["tasks"])
    lines = read_jsonl(demo_run / "tasks.jsonl")
    assert tasks.schema.field("duration_s").type == pa.float64()
    assert tasks.schema.field("submitted_at").type == TIMESTAMP
    assert tasks.schema.field("attempt").type == pa.int64()
    assert tasks.schema.field("dependencies").type == pa.list_(pa.string())
    assert pa.types.is_struct(tasks.schema.field("args").type)  # one consistent type
    assert files.json_columns["tasks"] == []
    for line, row in zip(lines, tasks.to_pylist()):
        assert row["duration_s"] == line.get("duration_s")
        assert row["key"] == line["key"]
        if line.get("submitted_at"):
            assert _iso(row["submitted_at"]) == line["submitted_at"]
        # a struct has every key of every line: the line's own keys come back, others null
        kept = {k: v for k, v in (row["args"] or {}).items() if v is not None}
        assert kept == {k: v for k, v in (line.get("args") or {}).items() if v is not None}
    assert any(row["args"] and row["args"]["scenario_id"] == 7 for row in tasks.to_pylist())

    meta = orjson.loads((demo_run / "run.json").read_bytes())
    run = pq.read_table(files["run"])
    assert run.num_rows == 1
    row = run.to_pylist()[0]
    assert run.schema.field("start_time").type == TIMESTAMP
    assert run.schema.field("end_time").type == TIMESTAMP
    assert run.schema.field("duration_s").type == pa.float64()
    assert run.schema.field("tasks_completed").type == pa.int64()
    assert _iso(row["start_time"]) == meta["start_time"]
    assert _iso(row["end_time"]) == meta["end_time"]
    assert row["duration_s"] == meta["duration_s"]
    assert row["tasks_completed"] == meta["tasks_completed"]
    assert "settings" not in row  # objects of run.json stay in run.json


def test_export_all_writes_one_folder_per_run(demo_project, tmp_path):
    results = export_all(demo_project / ".scalable" / "runs", tmp_path / "all")
    assert len(results) == 2
    for run_id, files in results.items():
        assert files["tasks"].parent == tmp_path / "all" / run_id
        assert pq.read_table(files["run"])["run_id"].to_pylist() == [run_id]


# --- edge cases ---------------------------------------------------------------------------


def test_corrupt_truncated_and_non_object_lines_are_skipped_and_counted(tmp_path):
    good = [orjson.dumps(_line(i, task="sim", duration_s=0.5)) for i in range(3)]
    torn = orjson.dumps(_line(3, task="sim"))[:-7]  # the last line of a crashed run
    raw = [good[0], b'{"event": "task_compl', b"", b"  ", b"[1, 2]", good[1], good[2], torn]
    run = _run(tmp_path, raw=b"\n".join(raw))
    files = export_parquet(run, tmp_path / "out")
    assert files.rows["tasks"] == 3
    assert files.bad_lines == {"tasks.jsonl": 3}
    assert read_lines(run / "tasks.jsonl")[1] == 3  # the same rule as the package's reader
    assert pq.read_table(files["tasks"])["duration_s"].to_pylist() == [0.5] * 3


def test_args_with_conflicting_types_become_a_json_column(tmp_path):
    args = [{"x": 1}, {"x": "a"}, '{"x": 1, "y": "trunc', None, {"x": [1, {"z": None}]}]
    run = _run(tmp_path, [_line(i, task="sim", args=a) for i, a in enumerate(args)])
    files = export_parquet(run, tmp_path / "out")
    table = pq.read_table(files["tasks"])
    assert table.schema.field("args").type == pa.string()
    assert files.json_columns["tasks"] == ["args"]
    assert orjson.loads(table.schema.metadata[b"scalable_otel.json_columns"]) == ["args"]
    texts = table["args"].to_pylist()
    assert texts[3] is None
    assert [orjson.loads(t) for t in texts if t is not None] == [a for a in args if a is not None]


def test_objects_with_different_keys_become_one_struct(tmp_path):
    args = [{"x": 1}, {"y": "a"}, {"x": 2.5, "z": [1, 2]}, {}]
    run = _run(tmp_path, [_line(i, args=a) for i, a in enumerate(args)])
    table = pq.read_table(export_parquet(run, tmp_path / "out")["tasks"])
    assert table.schema.field("args").type == pa.struct(
        [("x", pa.float64()), ("y", pa.string()), ("z", pa.list_(pa.int64()))]
    )
    assert table["args"].to_pylist()[2] == {"x": 2.5, "y": None, "z": [1, 2]}


def test_an_empty_object_everywhere_is_json_text(tmp_path):
    run = _run(tmp_path, [_line(i, args={}) for i in range(2)])
    files = export_parquet(run, tmp_path / "out")
    assert files.json_columns["tasks"] == ["args"]
    assert pq.read_table(files["tasks"])["args"].to_pylist() == ["{}", "{}"]


def test_empty_files_give_no_parquet_and_stale_copies_go(tmp_path):
    run = _run(tmp_path, [_line(0, task="sim")])
    out = tmp_path / "out"
    out.mkdir()
    (out / "workers.parquet").write_bytes(b"an export of an older state")
    files = export_parquet(run, out)
    assert sorted(files) == ["run", "tasks"]
    assert files.rows == {
        "run": 1,
        "tasks": 1,
        "resources": 0,
        "workers": 0,
        "cache": 0,
        "failures": 0,
        "metrics": 0,
    }
    assert sorted(p.name for p in out.iterdir()) == ["run.parquet", "tasks.parquet"]


def test_batches_with_a_late_field_and_late_type_changes(tmp_path):
    lines = [_line(i, task="sim", attempt=1, duration_s=1, args={"n": i}) for i in range(10)]
    lines[5]["duration_s"] = 0.25  # integers, then a float in a later batch
    lines[8]["caused_by"] = {"task": "boom", "key": "boom-1"}  # a field of the last batches
    lines[9]["args"] = {"n": "nine"}  # the last batch contradicts the first ones
    run = _run(tmp_path, lines)
    files = export_parquet(run, tmp_path / "out", batch_size=3)
    parquet = pq.ParquetFile(files["tasks"])
    assert parquet.metadata.num_row_groups == 4
    table = parquet.read()
    assert table.num_rows == 10
    assert table.schema.field("duration_s").type == pa.float64()
    assert table["duration_s"].to_pylist() == [1.0] * 5 + [0.25] + [1.0] * 4
    assert table.schema.field("caused_by").type == pa.struct(
        [("task", pa.string()), ("key", pa.string())]
    )
    assert table["caused_by"].to_pylist()[7:9] == [None, {"task": "boom", "key": "boom-1"}]
    assert files.json_columns["tasks"] == ["args"]
    assert [orjson.loads(a) for a in table["args"].to_pylist()] == [line["args"] for line in lines]


def test_time_fields_and_numbers_are_typed_even_when_null(tmp_path):
    lines = [_line(i, duration_s=None, submitted_at=None, attempt=1, nbytes=None) for i in range(2)]
    lines[0]["wall_s"] = 2  # seconds are float64 even as whole numbers
    lines[1]["note"] = "2026-05-20T03:52:00Z but not a time"
    run = _run(tmp_path, lines)
    table = pq.read_table(export_parquet(run, tmp_path / "out")["tasks"])
    types = {f.name: f.type for f in table.schema}
    assert types["duration_s"] == pa.float64()
    assert types["submitted_at"] == TIMESTAMP
    assert types["wall_s"] == pa.float64()
    assert types["attempt"] == pa.int64()
    assert types["nbytes"] == pa.null()
    assert types["note"] == pa.string()


def test_a_time_field_with_one_other_format_stays_text(tmp_path):
    lines = [_line(0), _line(1)]
    lines[1]["timestamp"] = "2026-05-20 03:52:01"
    run = _run(tmp_path, lines)
    table = pq.read_table(export_parquet(run, tmp_path / "out")["tasks"])
    assert table.schema.field("timestamp").type == pa.string()
    assert table["timestamp"].to_pylist() == [lines[0]["timestamp"], "2026-05-20 03:52:01"]


def test_an_interrupted_export_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    run = _run(tmp_path, [_line(i, task="sim") for i in range(6)])
    out = tmp_path / "out"
    before = pq.read_table(export_parquet(run, out)["tasks"])
    with open(run / "tasks.jsonl", "ab") as f:
        f.write(orjson.dumps(_line(6, task="sim")) + b"\n")

    convert, calls = export._record_batch, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stopped while the second row group is converted
        return convert(*args)

    monkeypatch.setattr(export, "_record_batch", failing)
    with pytest.raises(KeyboardInterrupt):
        export_parquet(run, out, batch_size=4)
    assert pq.read_table(out / "tasks.parquet").equals(before)
    assert _leftovers(out) == []


def test_lines_written_during_the_export_wait_for_the_next_one(tmp_path, monkeypatch):
    run = _run(tmp_path, [_line(i, task="sim") for i in range(4)])
    observe = export._Plan.observe

    def observe_then_append(self, batch):
        observe(self, batch)
        if batch[0].get("event") == "task_completed":  # reading tasks.jsonl, not run.json
            with open(run / "tasks.jsonl", "ab") as f:  # the live run goes on
                f.write(orjson.dumps(_line(9, task="late", extra=1)) + b"\n")

    monkeypatch.setattr(export._Plan, "observe", observe_then_append)
    files = export_parquet(run, tmp_path / "out", batch_size=2)
    table = pq.read_table(files["tasks"])
    assert table.num_rows == 4
    assert "extra" not in table.schema.names
    assert files.bad_lines == {}


def test_run_json_missing_or_corrupt(tmp_path):
    run = _run(tmp_path, [_line(0)])
    (run / "run.json").write_bytes(b'{"run_id": "run-')
    files = export_parquet(run, tmp_path / "out")
    assert "run" not in files
    assert files.bad_lines == {"run.json": 1}
    (run / "run.json").unlink()
    files = export_parquet(run, tmp_path / "out")
    assert sorted(files) == ["tasks"]
    assert files.bad_lines == {}
    assert not (tmp_path / "out" / "run.parquet").exists()


def test_a_running_run_json_keeps_typed_null_times(tmp_path):
    meta = {"run_id": RUN_ID, "status": "running", "start_time": "2026-05-20T03:52:00.000001Z"}
    meta |= {"end_time": None, "duration_s": None, "tasks_completed": 0}
    run = _run(tmp_path, [_line(0)], meta=meta)
    table = pq.read_table(export_parquet(run, tmp_path / "out")["run"])
    assert table.schema.field("end_time").type == TIMESTAMP
    assert table.schema.field("duration_s").type == pa.float64()
    assert table.to_pylist()[0]["end_time"] is None


def test_nothing_to_export(tmp_path):
    with pytest.raises(RunNotFound):
        export_parquet(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "runs").mkdir()
    with pytest.raises(RunNotFound):
        export_all(tmp_path / "runs", tmp_path / "out")
