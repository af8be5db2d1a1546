"""The lifecycle records' one declaration (`semconv.RECORDS`) against everything that
uses it: the recorder's handlers, the scheduler plugin that builds the records, the
schema document, and a real run.

`python -m tests.test_records` prints the table docs/telemetry-schema.md must hold.
"""

import inspect
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from scalable_otel import ScalableSession, cacheable
from scalable_otel import semconv as sc
from scalable_otel.instrumentation.scheduler_plugin import TaskRecordPlugin
from scalable_otel.lifecycle import Recorder
from scalable_otel.recording import RunRecording
from tests import workloads
from tests.conftest import events, unit_run_config, wait_for

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "telemetry-schema.md"
TABLE_BEGIN = "<!-- records table: made from scalable_otel.semconv.RECORDS -->"
TABLE_END = "<!-- end of records table -->"


def records_table() -> str:
    """The schema document's table of record kinds, made from the declaration."""
    lines = [
        "| Kind | Fields after the kind | Sent by | What it says |",
        "| --- | --- | --- | --- |",
    ]
    for kind, spec in sc.RECORDS.items():
        fields = ", ".join(f"`{field}`" for field in spec.fields)
        lines.append(f"| `{kind}` | {fields} | {spec.source} | {spec.meaning} |")
    return "\n".join(lines)


def test_every_declared_kind_has_a_handler_taking_its_fields():
    for kind, spec in sc.RECORDS.items():
        handler = getattr(Recorder, "_on_" + kind, None)
        assert handler is not None, f"no Recorder._on_{kind} for the declared kind {kind!r}"
        parameters = list(inspect.signature(handler).parameters.values())[1:]  # after self
        assert tuple(p.name for p in parameters) == spec.fields, kind
        for p in parameters:  # each field always sent: no defaults, no *args
            assert p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty, (kind, p)


def test_every_handler_is_of_a_declared_kind():
    handlers = {name[len("_on_") :] for name in vars(Recorder) if name.startswith("_on_")}
    assert handlers == set(sc.RECORDS)


def test_the_schema_document_lists_the_declared_records():
    text = SCHEMA.read_text()
    assert TABLE_BEGIN in text and TABLE_END in text
    written = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()
    assert written == records_table(), (
        "docs/telemetry-schema.md's records table differs from semconv.RECORDS; "
        "`python -m tests.test_records` prints the table to put there"
    )


def _scheduler():
    """Just enough of a Dask scheduler for the plugin's hooks."""
    dep = SimpleNamespace(key=("load", 0))
    worker = SimpleNamespace(
        address="tcp://127.0.0.1:40000",
        name=0,
        nthreads=1,
        memory_limit=2**30,
        host="127.0.0.1",
        pid=4242,
    )
    task = SimpleNamespace(
        run_spec=object(),
        state="released",
        prefix=SimpleNamespace(name="sim"),
        dependencies=[dep],
        exception_blame=SimpleNamespace(key=("load", 0), prefix=SimpleNamespace(name="load")),
        processing_on=worker,
        run_id=3,
        group=SimpleNamespace(span_id=None),  # in no Dask span
    )
    return SimpleNamespace(
        tasks={("sim", 1): task},
        workers={worker.address: worker},
        cumulative_worker_metrics={},
        extensions={},
    )


def plugin_records() -> list:
    """A record of every kind the scheduler plugin makes, made by its own hooks."""
    plugin = TaskRecordPlugin()
    scheduler = _scheduler()
    plugin._scheduler = scheduler
    plugin._fine.start(scheduler)
    key, address = ("sim", 1), "tcp://127.0.0.1:40000"
    compute = {"startstops": [{"action": "compute", "start": 1.0, "stop": 2.0}]}
    plugin.add_worker(scheduler, address)
    plugin.update_graph(scheduler, tasks=[key])
    plugin.transition(key, "waiting", "queued")
    plugin.transition(key, "queued", "processing")
    plugin.transition(key, "processing", "released", stimulus_id="task-erred-1")  # a retry
    plugin.transition(key, "processing", "memory", worker=address, nbytes=8, **compute)
    # the task ended above: the recorder takes these as records of an unknown task
    plugin.transition(key, "processing", "erred", worker=address, exception_text="E()")
    plugin.transition(key, "waiting", "erred")
    plugin.transition(key, "memory", "forgotten")
    plugin.log_event(sc.WORKER_TOPIC, {"worker": address, "name": "0", "usage": []})
    plugin.log_event(address, {"action": "worker-status-change", "status": "closing"})
    plugin.log_event("worker-restart-memory", {"worker": address, "rss": 2**31})
    plugin.log_event("all", {"action": "remove-worker", "worker": address})
    scheduler.cumulative_worker_metrics["execute", "sim", "thread-cpu", "seconds"] = 0.9
    plugin.sync("token")  # after the fine metrics that changed
    return list(plugin.records)


def test_the_scheduler_plugin_makes_each_of_its_records_as_declared():
    records = plugin_records()
    for record in records:
        assert type(record) is tuple  # plain tuples on the wire
        assert len(record) == len(sc.RECORDS[record[0]].fields) + 1, record
    plugin_kinds = {k for k, spec in sc.RECORDS.items() if spec.source == "scheduler plugin"}
    assert {record[0] for record in records} == plugin_kinds


@pytest.fixture
def recording(tmp_path):
    return RunRecording(unit_run_config(tmp_path, started=0.5))


def test_the_recorder_handles_every_record_the_plugin_makes(recording):
    recorder = recording.recorder
    recorder.handle(plugin_records() + [(sc.RECORD_CLOSING, 3.0)])
    assert recorder.unhandled == 0 and recorder.synced == {"token"}
    assert (recorder.submitted, recorder.completed) == (1, 1)
    assert recording.finish(4.0, None)["telemetry_records_unhandled"] == 0


def test_records_forwarded_from_a_remote_scheduler_are_handled(recording, tmp_path):
    # through Dask's event topics tuples arrive as lists, keys among them
    batch = orjson.loads(orjson.dumps(plugin_records()))
    recorder = recording.recorder
    recorder.handle([(sc.RECORD_FORWARDED, 3.0, batch)])
    assert recorder.unhandled == 0 and recorder.completed == 1
    summary = recording.finish(4.0, None)
    assert summary["telemetry_records_unhandled"] == 0
    (submitted,) = events(tmp_path, event="task_submitted")
    assert submitted["key"] == "('sim', 1)"  # the key is a tuple again


def test_a_real_run_leaves_no_record_unhandled(project_dir):
    @cacheable
    def square(x):
        return x * x

    with ScalableSession(target="local", n_workers=2, threads_per_worker=1, project="records") as s:
        assert square(3) == 9  # a lookup in the client: a "cache" record
        slow = s.submit(workloads.sleep_then, 1, seconds=3)
        bad = s.submit(workloads.fail, 1, retries=1)
        downstream = s.submit(workloads.add, bad, 1)
        assert s.gather(s.map(workloads.simulate, range(3))) == [0, 10, 20]
        with pytest.raises(ValueError):
            s.gather(downstream)
        wait_for(lambda: [e for e in events(s.run_dir, event="task_started")
                          if e["key"] == slow.key])  # fmt: skip
        slow.cancel()
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["telemetry_records_unhandled"] == 0
    assert (run["tasks_completed"], run["tasks_failed"], run["tasks_cancelled"]) == (3, 2, 1)
    assert run["cache_misses"] == 4  # one in the client, three on the workers
    assert len(events(s.run_dir, "workers.jsonl", "worker_removed")) == 2


def test_a_record_the_recorder_cannot_handle_is_counted_in_run_json(project_dir, capfd):
    with ScalableSession(target="local", n_workers=1, project="records") as s:
        s._recording.inbox.append(("no_such_kind", 1.0))
        s._recording.inbox.append((sc.RECORD_SYNC, 1.0))  # a field short
        assert s.gather(s.submit(workloads.inc, 1)) == 2
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["telemetry_records_unhandled"] == 2
    assert run["tasks_completed"] == 1 and run["status"] == "completed"
    # the telemetry process shares the session's stderr: one line names the first
    warned = [line for line in capfd.readouterr().err.splitlines() if "not handled" in line]
    assert len(warned) == 1 and "'no_such_kind'" in warned[0]


if __name__ == "__main__":
    print(records_table())
