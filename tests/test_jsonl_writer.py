"""The JSONL writer and readers, without Dask: appends, failures, torn lines."""

import os

import orjson
import pytest

from scalable_otel.analysis import load_run
from scalable_otel.exporters.jsonl import JsonlWriter
from scalable_otel.rundir import RunDirectory, new_run_id, read_lines


def test_lines_are_appended_and_flushed_in_the_background(tmp_path):
    run = RunDirectory.create(tmp_path, new_run_id("p"))
    writer = JsonlWriter(run.path, flush_interval=0.05)
    for i in range(100):
        writer.append("tasks.jsonl", {"event": "x", "i": i})
    import time

    deadline = time.monotonic() + 5
    while writer.written < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.close()
    lines = (run.path / "tasks.jsonl").read_bytes().splitlines()
    assert [orjson.loads(x)["i"] for x in lines] == list(range(100))
    assert oct(os.stat(run.path / "tasks.jsonl").st_mode & 0o777) == "0o600"
    assert oct(os.stat(run.path).st_mode & 0o777) == "0o700"


def test_unwritable_directory_counts_lost_lines_and_never_raises(tmp_path, caplog):
    run = RunDirectory.create(tmp_path, new_run_id("p"))
    writer = JsonlWriter(run.path, flush_interval=10)
    for name in os.listdir(run.path):
        os.unlink(run.path / name)
    os.rmdir(run.path)
    for _ in range(3):
        writer.append("tasks.jsonl", {"event": "x"})
        writer.flush()
    writer.close()
    assert writer.dropped == 3
    assert sum("cannot write telemetry" in r.message for r in caplog.records) == 1


def test_reader_skips_torn_and_corrupt_lines_and_counts_them(tmp_path):
    run = RunDirectory.create(tmp_path, new_run_id("p"))
    (run.path / "tasks.jsonl").write_bytes(
        b'{"timestamp":"2026-01-01T00:00:00.000001Z","event":"task_submitted","task":"a"}\n'
        b"\n"
        b"not json\n"
        b'{"timestamp":"2026-01-01T00:00:01.000001Z","event":"task_completed","task":"a",'
        b'"duration_s":1.5}\n'
        b'{"timestamp":"2026-01-01T00:00:02.0000'
    )
    loaded = load_run(run.path)
    assert list(loaded.tasks["event"]) == ["task_submitted", "task_completed"]
    assert loaded.skipped_lines == {"tasks.jsonl": 2}
    assert loaded.status == "unknown"


def test_a_write_cut_short_stays_one_bad_line(tmp_path, monkeypatch):
    import errno

    from scalable_otel.exporters import jsonl
    from scalable_otel.exporters.jsonl import LineAppender

    appender = LineAppender(tmp_path / "tasks.jsonl")
    appender.write(b'{"n":1}\n')
    real_write = os.write
    calls = []

    def disk_fills(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:5]))  # part of the line reaches the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jsonl.os, "write", disk_fills)
    with pytest.raises(OSError):
        appender.write(b'{"n":2}\n')
    monkeypatch.setattr(jsonl.os, "write", real_write)
    appender.write(b'{"n":3}\n')
    appender.close()
    records, bad = read_lines(tmp_path / "tasks.jsonl")
    assert [r["n"] for r in records] == [1, 3] and bad == 1
