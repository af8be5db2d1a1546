"""Telemetry failures are counted in run.json and warned about once, never raised into the
workflow: a failed worker batch, spans beyond a worker's cap, tasks whose description
failed, a batch the driver cannot send, a run.json that cannot be written at the end, and
records the recorder cannot handle (its warning scrubbed with the run's redaction)."""

from __future__ import annotations

import time

import orjson

import scalable_otel.session as session_module
import scalable_otel.submission as submission
from scalable_otel import Redaction, ScalableSession
from scalable_otel import semconv as sc
from tests import workloads


def _meta(session) -> dict:
    return orjson.loads((session.run_dir / "run.json").read_bytes())


def _warnings(capfd, caplog, text: str) -> list[str]:
    """What the session's process logged and the telemetry process printed with `text`."""
    lines = capfd.readouterr().err.splitlines() + [r.getMessage() for r in caplog.records]
    return [line for line in lines if text in line]


def _fail_first_batches(dask_worker, count: int, run_id: str) -> None:
    """On a worker: its next `count` telemetry batches of run `run_id` fail to send."""
    send = dask_worker.log_event
    left = [count]

    def log_event(topic, msg):
        if topic == sc.per_run(sc.WORKER_TOPIC, run_id) and left[0] > 0:
            left[0] -= 1
            raise RuntimeError("injected: the batched stream is gone")
        return send(topic, msg)

    dask_worker.log_event = log_event


def _batches_lost(dask_worker, run_id: str) -> int:
    return dask_worker.plugins[sc.per_run(sc.WORKER_PLUGIN_NAME, run_id)]._batches_lost


def _cap_spans(dask_worker, cap: int) -> None:
    from scalable_otel.instrumentation import worker_plugin

    worker_plugin._MAX_PENDING_SPANS = cap


def test_failed_worker_batches_and_capped_spans_are_counted(project_dir, capfd, caplog):
    with ScalableSession(target="local", n_workers=1, project="swallowed") as s:
        s.client.run(_fail_first_batches, count=2, run_id=s.run_id)
        s.client.run(_cap_spans, cap=0)
        assert s.gather(s.map(workloads.make_spans, [3, 4, 5])) == [3, 4, 5]
        # a lost batch's count travels in the worker's next one: wait until both failed
        deadline = time.monotonic() + 60
        while list(s.client.run(_batches_lost, run_id=s.run_id).values()) != [2]:
            assert time.monotonic() < deadline, "the worker sent no batch"
            time.sleep(0.05)
    meta = _meta(s)
    assert meta["status"] == "completed" and meta["tasks_completed"] == 3
    assert meta["telemetry_worker_batches_lost"] == 2
    # a cap of 0: every span made in a task is beyond it
    assert meta["telemetry_task_spans_dropped"] == 12
    err = capfd.readouterr().err
    assert sum("failed to send its telemetry" in line for line in err.splitlines()) == 1
    assert sum("beyond its cap" in line for line in err.splitlines()) == 1


def test_tasks_whose_description_failed_are_counted(project_dir, capfd, caplog, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("injected: no summary")

    monkeypatch.setattr(submission, "args_json", broken)
    with ScalableSession(target="local", n_workers=1, project="swallowed") as s:
        assert s.gather(s.map(workloads.inc, range(4))) == [1, 2, 3, 4]
        assert s.gather(s.submit(workloads.add, 1, 2)) == 3
    meta = _meta(s)
    assert meta["telemetry_descriptions_failed"] == 5
    assert meta["tasks_completed"] == 5 and meta["status"] == "completed"
    assert len(_warnings(capfd, caplog, "could not be described")) == 1


def test_a_batch_that_cannot_be_sent_is_counted_and_the_workflow_goes_on(
    project_dir, capfd, caplog
):
    with ScalableSession(target="local", n_workers=1, project="swallowed") as s:
        for _ in range(2):  # a record no pickle can carry, in the forwarder's batch
            s._recording.inbox.append((sc.RECORD_CACHE, lambda: None))
            assert s.gather(s.submit(workloads.inc, 1, pure=False)) == 2
    meta = _meta(s)
    assert meta["status"] == "completed"
    assert meta["telemetry_records_dropped"] >= 2
    assert len(_warnings(capfd, caplog, "could not be sent")) == 1


def test_a_failure_at_the_end_of_the_run_never_reaches_the_workflow(
    project_dir, capfd, caplog, monkeypatch
):
    real = session_module.run_json

    def failing(**kwargs):
        if kwargs["status"] != sc.RUN_RUNNING:
            raise RuntimeError("injected: run.json cannot be made")
        return real(**kwargs)

    monkeypatch.setattr(session_module, "run_json", failing)
    with ScalableSession(target="local", n_workers=1, project="swallowed") as s:
        assert s.gather(s.submit(workloads.inc, 41)) == 42
    assert s.status == "completed"
    warned = _warnings(capfd, caplog, "did not finish")
    assert len(warned) == 1 and "injected" in warned[0]


def test_an_unhandled_record_is_warned_about_with_its_secret_cut_out(project_dir, capfd, caplog):
    redaction = Redaction(values=[r"hunter\d+"])
    with ScalableSession(
        target="local", n_workers=1, project="swallowed", redaction=redaction
    ) as s:
        s._recording.inbox.append(("no_such_kind_hunter22", 1.0))
        assert s.gather(s.submit(workloads.inc, 1)) == 2
    assert _meta(s)["telemetry_records_unhandled"] == 1
    (warned,) = _warnings(capfd, caplog, "not handled")
    assert "hunter22" not in warned
