"""The columnar copy of a large run: written after the close, by a process of its own."""

import os
import signal
import subprocess
import sys

import orjson

from scalable_otel.analysis import columns, load_run, report
from scalable_otel.exporters import columnar
from scalable_otel.rundir import columnar_copy_paths
from tests import workloads
from tests.conftest import REPO


def test_a_large_run_s_close_leaves_its_copy_to_a_process_it_does_not_wait_for(
    project_dir, monkeypatch
):
    from scalable_otel import ScalableSession

    monkeypatch.setattr(columnar, "COPY_MIN_BYTES", 0)  # as if the run were large
    monkeypatch.setattr(columnar, "BACKGROUND_MIN_BYTES", 0)
    in_this_process = []
    monkeypatch.setattr(columnar, "write_columnar_copy", lambda *a, **k: in_this_process.append(a))
    with ScalableSession(target="local", n_workers=1, project="copy") as session:
        session.gather(session.map(workloads.sleep_then, range(5), seconds=0.01))
    assert in_this_process == []  # the close did not write it
    process = session._columnar_copy
    assert process.wait(timeout=60) == 0
    copies = session.run_dir / ".columnar"
    assert sorted(p.name for p in copies.glob("*.parquet")) == [
        "cache.parquet",
        "resources.parquet",
        "tasks.parquet",
    ]
    assert not list(copies.glob("*.tmp"))
    summary = report(load_run(session.run_dir))
    monkeypatch.setattr(columns, "_fresh_copy", lambda path: None)  # the JSONL alone
    assert report(load_run(session.run_dir)) == summary
    assert summary["tasks"]["completed"] == 5


def test_a_copy_killed_half_way_is_never_read(tmp_path):
    run = tmp_path / "run-20260101T000000Z-p-00000000"
    run.mkdir()
    lines = [
        {"timestamp": "2026-01-01T00:00:00.000000Z", "event": "task_completed", "task": "t"}
        | {"key": f"t-{i}", "duration_s": 1.0}
        for i in range(200_000)
    ]
    (run / "tasks.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    (run / "run.json").write_bytes(orjson.dumps({"run_id": run.name, "status": "completed"}))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    copy = subprocess.Popen(
        [sys.executable, "-m", "scalable_otel.exporters.columnar", str(run), "0"], env=env
    )
    tmp_seen = None
    while copy.poll() is None and tmp_seen is None:  # kill it while the parquet is written
        found = list((run / ".columnar").glob(".tasks.parquet.*.tmp"))
        tmp_seen = found[0] if found else None
    copy.send_signal(signal.SIGKILL)
    copy.wait()
    _, sidecar = columnar_copy_paths(run / "tasks.jsonl")
    assert tmp_seen is not None  # killed while the parquet was being written
    assert columns._fresh_copy(run / "tasks.jsonl") is None  # no copy a reader trusts
    assert not sidecar.exists()
    assert report(load_run(run))["tasks"]["completed"] == 200_000
