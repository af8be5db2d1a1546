"""Where a run's OTel work happens: in a child process (the default) or in a thread.

With a local cluster the Dask scheduler runs in the client's process, and every
span, metric and JSON line made there would hold the GIL the scheduler needs.
So by default a small child process owns the run's OTel pipeline: the client
only forwards the scheduler plugin's records to it in one pickled batch per
flush interval. Span processors, metric readers, log processors or a meter provider
passed in as Python objects live in this process, so with them the recorder runs in a
thread here instead.

Both transports offer the same surface: `describe`, `inbox`, `mark_closing`,
`sync` and `close`, which returns the run's summary.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from opentelemetry.trace import Status, StatusCode

from . import semconv as sc
from .args import Redaction
from .exporters.settings import ExportSettings
from .lifecycle import Recorder
from .span_records import readable_span
from .telemetry import build_pipeline, mirrored_meter

logger = logging.getLogger(__name__)

STATUS_CRASHED = "crashed"  # the run span's status when the session's process died


@dataclass
class RunConfig:
    """What the OTel side of a run needs to know (plain data, sent to the child)."""

    run_dir: str
    run_id: str
    project: str
    target: str
    provider: str
    started: float
    flush_interval: float
    trace_id: str | None = None  # hex; chosen by the session, known to the workers
    exports: dict | None = None  # ExportSettings.to_dict()
    # the user's redaction patterns, (pattern, flags): cut out of error messages too
    redact_values: list | None = None


def _take_all(*queues: deque) -> list:
    """Everything in the queues, in order, safe against appends from other threads."""
    records = []
    for queue in queues:
        while queue:
            records.append(queue.popleft())
    return records


class RunRecording:
    """The OTel side of one run: its pipeline, its run span and its recorder."""

    def __init__(
        self,
        config: RunConfig,
        *,
        span_processors=(),
        metric_readers=(),
        log_processors=(),
        meter_provider=None,
        on_sync=None,
    ):
        self.finished = False  # set once the run's figures are final
        self.pipeline = build_pipeline(
            Path(config.run_dir),
            config.run_id,
            project=config.project,
            flush_interval=config.flush_interval,
            trace_id=int(config.trace_id, 16) if config.trace_id else None,
            exports=ExportSettings.from_dict(config.exports) if config.exports else None,
            span_processors=span_processors,
            metric_readers=metric_readers,
            log_processors=log_processors,
        )
        tracer = self.pipeline.tracer()
        self.run_span = tracer.start_span(
            sc.SPAN_RUN,
            start_time=int(config.started * 1e9),
            attributes={
                sc.KIND: sc.KIND_RUN,
                sc.RUN_ID: config.run_id,
                sc.PROJECT: config.project,
                sc.TARGET: config.target,
                sc.PROVIDER: config.provider,
            },
        )
        meter = self.pipeline.meter()
        if meter_provider is not None:  # the caller's: the run's metrics recorded there too
            meter = mirrored_meter(meter, meter_provider, lambda: self.finished)
        self.recorder = Recorder(
            tracer=tracer,
            meter=meter,
            event_logger=self.pipeline.event_logger(),
            run_span=self.run_span,
            on_sync=on_sync,
            run_id=config.run_id,
            ids=self.pipeline.ids,
            span_out=self._span_from_task,
            redaction=Redaction(values=config.redact_values or ()),
        )

    def handle(self, records) -> None:
        """Turn records into signals and write their lines now: a line waits for no more
        than the batch that brought its event (one flush interval), so a kill of the
        whole process group loses at most that."""
        self.recorder.handle(records)
        self.pipeline.writer.flush()

    def _span_from_task(self, record: dict) -> None:
        """A span made by user code inside a task, sent by its worker: to every exporter."""
        resource = self.pipeline.tracer_provider.resource
        self.pipeline.export_span(readable_span(record, resource))

    def finish(self, now: float, status: str | None) -> dict:
        """End every open span, flush every exporter; the run's figures for run.json."""
        recorder = self.recorder
        recorder.close(now)
        if status is None:
            status = "failed" if recorder.failed else "completed"
        self.run_span.set_attribute(sc.RUN_STATUS, status)
        if status != "completed":
            self.run_span.set_status(Status(StatusCode.ERROR, status))
        self.run_span.end(end_time=int(now * 1e9))
        self.pipeline.shutdown()
        self.finished = True
        return {
            "status": status,
            "tasks_submitted": recorder.submitted,
            "tasks_completed": recorder.completed,
            "tasks_failed": recorder.failed,
            "tasks_cancelled": recorder.cancelled,
            "cache_hits": recorder.cache_hits,
            "cache_misses": recorder.cache_misses,
            "telemetry_lines_dropped": self.pipeline.writer.dropped,
            "telemetry_spans_dropped": self.pipeline.backends.dropped_spans(),
            "telemetry_records_unhandled": recorder.unhandled,
            "telemetry_write_error": self.pipeline.writer.errors.first,
            "exporters": dict(self.pipeline.backends.where),
            "trace_id": f"{self.run_span.get_span_context().trace_id:032x}",
        }


class InThreadRecording:
    """The recorder in a thread of this process, draining the plugin's records."""

    def __init__(self, config: RunConfig, source: deque, **processors):
        self._run = RunRecording(config, **processors)
        self._source = source
        self.inbox: deque = deque()
        self._interval = config.flush_interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="scalable-otel-recorder", daemon=True
        )
        self._thread.start()

    def describe(self, key, name: str, args_json: str | None, component=None) -> None:
        self._run.recorder.describe(key, name, args_json, component)

    def _drain(self) -> None:
        with self._lock:
            self._run.handle(_take_all(self._source, self.inbox))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._drain()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return True

    def mark_closing(self) -> None:
        self._run.recorder.closing = True

    def sync(self, token: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._drain()
            if token in self._run.recorder.synced:
                return True
            time.sleep(0.01)
        return False

    def close(self, now: float, status: str | None) -> dict:
        self._stop.set()
        self._thread.join(timeout=10)
        self._drain()
        return self._run.finish(now, status)


class ChildProcessRecording:
    """The recorder in a child process; this side forwards records to it in batches."""

    def __init__(self, config: RunConfig, source: deque):
        self._source = source
        self.inbox: deque = deque()
        self._descriptions: list = []
        self._interval = config.flush_interval
        self._send_lock = threading.Lock()
        self._broken = False
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "scalable_otel._recorder_main", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._conn = Connection(ours.detach())
        self._send(("start", asdict(config)))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="scalable-otel-forwarder", daemon=True
        )
        self._thread.start()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the child has built its pipeline, so its start-up is not the run's."""
        return self._receive("ready", timeout) is not None

    def describe(self, key, name: str, args_json: str | None, component=None) -> None:
        self._descriptions.append((key, name, args_json, component))

    def _send(self, message) -> None:
        if self._broken:
            return
        try:
            with self._send_lock:
                self._conn.send(message)
        except (OSError, ValueError) as exc:
            self._broken = True
            logger.warning(
                "scalable-otel: the telemetry process is gone (%s); the workflow "
                "goes on without telemetry",
                exc,
            )

    def _forward(self) -> None:
        records = _take_all(self._source, self.inbox)
        # Descriptions are taken after the records: a record's task was described before
        # it reached the scheduler, so its description is in this batch or an earlier one.
        descriptions, self._descriptions = self._descriptions, []
        if records or descriptions:
            self._send(("batch", descriptions, records))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._forward()

    def mark_closing(self) -> None:
        # In the plugin's queue too: records are taken from that queue before the inbox,
        # and a worker removed after this mark must not be read as a crash.
        marker = (sc.RECORD_CLOSING, time.time())
        self._source.append(marker)
        self.inbox.append(marker)

    def _receive(self, expected: str, timeout: float):
        deadline = time.monotonic() + timeout
        while not self._broken:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0 or not self._conn.poll(remaining):
                    return None
                message = self._conn.recv()
            except (OSError, EOFError):
                self._broken = True
                return None
            if message[0] == expected:
                return message
        return None

    def sync(self, token: str, timeout: float = 30.0) -> bool:
        self._forward()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._receive("synced", deadline - time.monotonic())
            if reply is None:
                return False
            if reply[1] == token:
                return True
        return False

    def close(self, now: float, status: str | None) -> dict | None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._forward()
        self._send(("close", now, status))
        reply = self._receive("closed", timeout=60)
        try:
            self._conn.close()
        except OSError:
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
        return reply[1] if reply else None


def serve(conn: Connection) -> None:
    """The child: build the pipeline, handle batches until told to close."""
    message = conn.recv()
    config = RunConfig(**message[1])
    run = RunRecording(config, on_sync=lambda token: conn.send(("synced", token)))
    conn.send(("ready",))
    recorder = run.recorder
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the client died: keep what it sent, end the spans
            break
        if message[0] == "batch":
            for description in message[1]:
                recorder.describe(*description)
            run.handle(message[2])
        elif message[0] == "close":
            summary = run.finish(message[1], message[2])
            conn.send(("closed", summary))
            return
    # The pipe ended without a close: the session's process died, so the run crashed
    # (however its tasks went), and the trace must not say it completed.
    run.finish(time.time(), STATUS_CRASHED)
