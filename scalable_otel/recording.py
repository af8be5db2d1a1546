"""Where a run's OTel work happens: in a child process (the default) or in a thread.

With a local cluster the Dask scheduler runs in the client's process, and every
span, metric and JSON line made there would hold the GIL the scheduler needs.
So by default a small child process owns the run's OTel pipeline: the client
only forwards the scheduler plugin's records to it in one pickled batch per
flush interval. Span processors, metric readers, log processors or a meter provider
passed in as Python objects live in this process, so with them the recorder runs in a
thread here instead.

Both transports offer the same surface: `describe`, `inbox`, `mark_closing`,
`sync`, `close`, which returns the run's summary, and `driver_counts`, what this side
dropped. The records wait in bounded queues (`queues.BoundedQueue`): a telemetry
process that falls behind costs records, counted, never the driver's memory. If the
session's process dies, the child process writes run.json as `crashed` itself. A
process making many runs keeps a child started ahead (`SPARES`) for the next one.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from opentelemetry.trace import Status, StatusCode

from . import energy_model
from . import semconv as sc
from .args import Redaction
from .children import child_env
from .exporters.settings import ExportSettings
from .lifecycle import Recorder
from .queues import RECORD_QUEUE_BOUND, BoundedQueue
from .rundir import RUN_JSON, run_json, write_json_atomic
from .span_records import readable_span
from .telemetry import build_pipeline, mirrored_meter

logger = logging.getLogger(__name__)

STATUS_CRASHED = sc.RUN_CRASHED  # the run span's status when the session's process died
DEFAULT_CLOSE_TIMEOUT_S = 30.0  # a close without a session's budget (tests, direct use)


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
    # rundir.run_json's keywords but status, ended, summary and heartbeat: the child
    # writes run.json as crashed with them when the session's process dies
    run_json: dict | None = None
    # the target's `energy:` settings (energy_model.constants) for the energy metrics
    energy: dict | None = None


def _energy_constants(settings: dict | None) -> dict:
    """The energy metrics' constants; a setting the manifest check let through that is
    still unusable falls back to the defaults (telemetry never fails the run)."""
    try:
        return energy_model.constants(settings)
    except energy_model.EnergyError:
        return energy_model.constants()


def _take_all(*queues: deque) -> list:
    """Everything in the queues, in order, safe against appends from other threads."""
    records = []
    for queue in queues:
        while queue:
            records.append(queue.popleft())
    return records


class Heartbeat:
    """Calls `beat(now)` every `interval` seconds in a thread until `stop()`: the session
    rewrites run.json's `heartbeat_time` with it, so that a reader on any host can tell a
    run whose every process died (`semconv.HEARTBEAT_STALE_S`)."""

    def __init__(self, beat: Callable[[float], None], interval: float | None = None):
        self._beat = beat
        self._interval = sc.HEARTBEAT_INTERVAL_S if interval is None else interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="scalable-otel-heartbeat")
        self._thread.daemon = True
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    self._beat(time.time())
                except Exception:  # a full disk: the run's end says so, not each beat
                    logger.debug("scalable-otel: heartbeat not written", exc_info=True)

    def stop(self) -> None:
        """No beat after this returns (one under way is waited for)."""
        with self._lock:
            self._stop.set()


class _DriverSide:
    """What the driver's side of a recording counts: records it dropped (bounded queues,
    batches that could not be sent) and tasks it could not describe; each warned once."""

    def _init_counts(self, source: deque) -> None:
        self._source = source
        self.inbox: BoundedQueue = BoundedQueue()
        self._lost = 0  # records in batches that could not be sent
        self._descriptions_dropped = 0
        self.descriptions_failed = 0
        self._warned: set = set()
        # where the pipeline's exporters really are, once it is ready (None before)
        self.exporters: dict | None = None

    @property
    def records_dropped(self) -> int:
        queues = (self._source, self.inbox)
        dropped = sum(getattr(q, "dropped", 0) for q in queues)
        return dropped + self._lost + self._descriptions_dropped

    def driver_counts(self) -> dict:
        """This side's counts, for run.json."""
        return {
            "telemetry_records_dropped": self.records_dropped,
            "telemetry_descriptions_failed": self.descriptions_failed,
        }

    def _warn_once(self, what: str, message: str, *args) -> None:
        if what not in self._warned:
            self._warned.add(what)
            logger.warning(message, *args)

    def _check_drops(self) -> None:
        queues = (self._source, self.inbox)
        if self._descriptions_dropped or any(getattr(q, "dropped", 0) for q in queues):
            self._warn_once(
                "dropped",
                "scalable-otel: the telemetry process falls behind; records beyond %d "
                "waiting are dropped, counted in run.json's telemetry_records_dropped",
                RECORD_QUEUE_BOUND,
            )

    def arrived(self) -> None:
        """Records arrived in the inbox (the thread's recorder drains it while syncing)."""

    def description_failed(self, count: int) -> None:
        """`count` tasks were submitted without (a whole) description: counted, warned once."""
        self.descriptions_failed += count
        self._warn_once(
            "described",
            "scalable-otel: a task could not be described (its name or arguments); this and "
            "any later ones are counted in run.json's telemetry_descriptions_failed",
        )


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
                sc.CICD_PIPELINE_NAME: config.project,
                sc.CICD_PIPELINE_RUN_ID: config.run_id,
                sc.CICD_PIPELINE_ACTION_NAME: sc.PIPELINE_ACTION_RUN,
            },
        )
        meter = self.pipeline.meter()
        if meter_provider is not None:  # the caller's: the run's metrics recorded there too
            meter = mirrored_meter(meter, meter_provider, lambda: self.finished)
        self.spans = self.pipeline.span_sink(self.run_span)
        self.recorder = Recorder(
            spans=self.spans,
            meter=meter,
            emit_event=self.pipeline.emit_event,
            run_context=self.run_span.get_span_context(),
            on_sync=on_sync,
            run_id=config.run_id,
            span_out=self._span_from_task,
            redaction=Redaction(values=config.redact_values or ()),
            energy=_energy_constants(config.energy),
        )

    def handle(self, records) -> None:
        """Turn records into signals and write their lines now: a line waits for no more
        than the batch that brought its event (one flush interval), so a kill of the
        whole process group loses at most that."""
        self.recorder.handle(records)
        self.pipeline.writer.flush()

    def batch(self, descriptions, records) -> None:
        """One batch from the session: its tasks' descriptions, then its records."""
        for description in descriptions:
            self.recorder.describe(*description)
        self.handle(records)

    def _span_from_task(self, record: dict) -> None:
        """A span made by user code inside a task, sent by its worker: to every exporter."""
        resource = self.pipeline.tracer_provider.resource
        self.spans.ended(readable_span(record, resource))

    def finish(self, now: float, status: str | None) -> dict:
        """End every open span, flush every exporter; the run's figures for run.json."""
        recorder = self.recorder
        recorder.close(now)
        if status is None:
            status = sc.RUN_FAILED if recorder.failed else sc.RUN_COMPLETED
        self.run_span.set_attribute(sc.RUN_STATUS, status)
        if status in sc.RUN_RESULTS:
            self.run_span.set_attribute(sc.CICD_PIPELINE_RESULT, sc.RUN_RESULTS[status])
        if status != sc.RUN_COMPLETED:
            self.run_span.set_attribute(sc.ERROR_TYPE, status)
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
            "telemetry_logs_dropped": self.pipeline.dropped_logs(),
            "telemetry_records_unhandled": recorder.unhandled,
            "telemetry_fallbacks": dict(recorder.fallbacks),
            "telemetry_worker_batches_lost": recorder.worker_batches_lost,
            "telemetry_task_spans_dropped": recorder.task_spans_dropped,
            "telemetry_write_error": self.pipeline.writer.errors.first,
            "exporters": dict(self.pipeline.backends.where),
            "trace_id": f"{self.run_span.get_span_context().trace_id:032x}",
        }


class InThreadRecording(_DriverSide):
    """The recorder in a thread of this process, draining the plugin's records."""

    def __init__(self, config: RunConfig, source: deque, **processors):
        self._init_counts(source)
        self._run = RunRecording(config, **processors)
        self._interval = config.flush_interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="scalable-otel-recorder", daemon=True
        )
        self._thread.start()

    def describe(
        self, key, name: str, args_json: str | None, component=None, function=None
    ) -> None:
        self._run.recorder.describe(key, name, args_json, component, function)

    def _drain(self) -> None:
        with self._lock:
            self._run.handle(_take_all(self._source, self.inbox))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._drain()
                self._check_drops()
            except Exception as exc:  # never into the workflow: the recorder goes on
                self._warn_once("loop", "scalable-otel: telemetry records lost (%s)", exc)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        self.exporters = dict(self._run.pipeline.backends.where)
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

    def close(self, now: float, status: str | None, timeout: float = DEFAULT_CLOSE_TIMEOUT_S):
        self._stop.set()
        self._thread.join(timeout=timeout)
        self._drain()
        return self._run.finish(now, status)


class ChildProcessRecording(_DriverSide):
    """The recorder in a child process; this side forwards records to it in batches.

    Every send happens in the forwarder thread, which may block while the child is slow
    or stopped: the queues stay bounded meanwhile, and `close` waits for the child only
    until its deadline, then kills it."""

    def __init__(self, config: RunConfig, source: deque):
        self._init_counts(source)
        self._descriptions: list = []
        self._interval = config.flush_interval
        self._broken = False
        self._closing: tuple | None = None
        self._syncing = False  # a sync mark is awaited: forward what arrives at once
        self._process, self._conn = SPARES.take()
        self._send(("start", asdict(config)))
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="scalable-otel-forwarder", daemon=True
        )
        self._thread.start()

    @property
    def pid(self) -> int:
        """The telemetry process's pid."""
        return self._process.pid

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the child has built its pipeline, so its start-up is not the run's;
        `exporters` is then where its exporters really are (a port 0 made real)."""
        ready = self._receive("ready", timeout)
        if ready is not None and len(ready) > 1 and isinstance(ready[1], dict):
            self.exporters = ready[1]
        return ready is not None

    def describe(
        self, key, name: str, args_json: str | None, component=None, function=None
    ) -> None:
        if len(self._descriptions) < RECORD_QUEUE_BOUND:
            self._descriptions.append((key, name, args_json, component, function))
        else:
            self._descriptions_dropped += 1

    def _send(self, message) -> None:
        """Send to the child (the forwarder thread only, once started); a broken pipe turns
        telemetry off with one warning. Raises what pickling raises."""
        if self._broken:
            raise BrokenPipeError("the telemetry process is gone")
        try:
            self._conn.send(message)
        except (OSError, ValueError) as exc:
            if self._closing is None:  # else the close may have ended it itself
                self._gone(exc)
            self._broken = True
            raise BrokenPipeError(str(exc)) from exc

    def _gone(self, exc: BaseException) -> None:
        """The pipe to the telemetry process broke: one warning, telemetry off."""
        if not self._broken:
            self._broken = True
            logger.warning(
                "scalable-otel: the telemetry process is gone (%s); the workflow "
                "goes on without telemetry",
                type(exc).__name__,
            )

    def _forward(self) -> None:
        records = _take_all(self._source, self.inbox)
        # Descriptions are taken after the records: a record's task was described before
        # it reached the scheduler, so its description is in this batch or an earlier one.
        descriptions, self._descriptions = self._descriptions, []
        if not (records or descriptions):
            return
        try:
            self._send(("batch", descriptions, records))
        except Exception as exc:  # the child gone, or a record that cannot be pickled
            self._lost += len(records) + len(descriptions)
            if not isinstance(exc, BrokenPipeError):
                self._warn_once(
                    "unsent",
                    "scalable-otel: a batch of telemetry records could not be sent (%s); "
                    "counted in run.json's telemetry_records_dropped",
                    type(exc).__name__,
                )

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            closing = self._closing
            try:
                self._forward()
                self._check_drops()
            except Exception as exc:  # never into the workflow
                self._warn_once("loop", "scalable-otel: telemetry records lost (%s)", exc)
            if closing is not None:
                try:
                    self._send(("close", *closing))
                except Exception:
                    pass  # the close waits for its reply in vain, and ends the child
                return

    def mark_closing(self) -> None:
        # In the plugin's queue too: records are taken from that queue before the inbox,
        # and a worker removed after this mark must not be read as a crash.
        marker = (sc.RECORD_CLOSING, time.time())
        deque.append(self._source, marker)  # past any bound: two marks
        deque.append(self.inbox, marker)

    def _receive(self, expected: str, timeout: float):
        deadline = time.monotonic() + timeout
        while not self._broken:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0 or not self._conn.poll(remaining):
                    return None
                message = self._conn.recv()
            except (OSError, EOFError) as exc:  # it died (no reply of ours ends it)
                self._gone(exc)
                return None
            if message[0] == expected:
                return message
        return None

    def arrived(self) -> None:
        """Records forwarded by a scheduler arrived in the inbox: while a sync mark is
        awaited they go to the child now, not at the next flush interval."""
        if self._syncing:
            self._wake.set()

    def sync(self, token: str, timeout: float = 30.0) -> bool:
        self._syncing = True
        self._wake.set()  # forward now
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                reply = self._receive("synced", deadline - time.monotonic())
                if reply is None:
                    return False
                if reply[1] == token:
                    return True
            return False
        finally:
            self._syncing = False

    def close(
        self, now: float, status: str | None, timeout: float = DEFAULT_CLOSE_TIMEOUT_S
    ) -> dict | None:
        """Forward the last records, ask the child for the run's summary and wait for it
        at most `timeout` seconds in all; past that the child is killed (None)."""
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        self._closing = (now, status)
        self._wake.set()
        self._thread.join(timeout=left())
        reply = None if self._thread.is_alive() else self._receive("closed", left())
        if reply is not None:
            try:
                self._process.wait(timeout=max(left(), 1.0))
            except subprocess.TimeoutExpired:
                pass
        if self._process.poll() is None:  # stopped, hung or slow: its run.json is ours
            self._process.kill()
            self._process.wait()
        self._thread.join(timeout=1.0)  # a send the kill cut short
        if not self._thread.is_alive():
            try:
                self._conn.close()
            except OSError:
                pass
        return reply[1] if reply else None


def _spawn(env: dict) -> tuple[subprocess.Popen, Connection]:
    """A new telemetry process and this side's end of its pipe; it imports what a run
    needs, then waits for its run's "start" message (or the end of the pipe)."""
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "scalable_otel._recorder_main", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return process, Connection(ours.detach())


class SpareProcesses:
    """Telemetry processes started ahead of the runs that will take them.

    A telemetry process spends most of its start importing the OpenTelemetry SDK (a
    few tenths of a second on an idle host, more on a busy one, as it runs at a lower
    priority): a session waits for that before its run begins. A process that makes many
    clients (`DaskInstrumentor`: a notebook, a test suite) keeps one process started
    ahead (`keep(True)`; two, so that a client coming while the newest still imports
    finds the other ready): a run takes the oldest, already imported, and another is
    started for the runs to come. Off by default: a script's single session never pays for a spare.

    A spare never outlives its interest: `keep(False)` and the interpreter's exit end
    it, and when this process dies it sees the end of its pipe and exits. It is taken
    only by the process that started it (not by a forked copy) and only with the
    environment it was started with (the `OTEL_*` variables it reads; `_VOLATILE_ENV`
    aside)."""

    def __init__(self, size: int = 2):
        self._lock = threading.Lock()
        self._size = size  # two: a client that comes while one still imports finds one
        self._kept = False
        self._spares: deque = deque()  # (process, connection, environment, our pid)
        self._exit_hook = False

    def keep(self, wanted: bool) -> None:
        """Keep spares from now on (started now), or end them and keep none."""
        with self._lock:
            self._kept = wanted
            if wanted and not self._exit_hook:
                atexit.register(self.keep, False)
                self._exit_hook = True
            ended = [] if wanted else _take_all(self._spares)
        for spare in ended:
            _end(spare)
        if wanted:
            self._replenish()

    def take(self) -> tuple[subprocess.Popen, Connection]:
        """A telemetry process for a run: the oldest spare that fits, else a new one."""
        env = child_env()
        taken = None
        while taken is None:
            with self._lock:
                spare = self._spares.popleft() if self._spares else None
            if spare is None:
                break
            if _fits(spare[2], env) and spare[3] == os.getpid() and spare[0].poll() is None:
                taken = spare[:2]
            else:
                _end(spare)
        if taken is None:
            taken = _spawn(env)
        self._replenish(env)
        return taken

    def _replenish(self, env: dict | None = None) -> None:
        """Start spares until `size` are kept (if they are); never raises: the next run
        starts its own."""
        while True:
            with self._lock:
                if not self._kept or len(self._spares) >= self._size:
                    return
            try:
                env = env if env is not None else child_env()
                spare = (*_spawn(env), env, os.getpid())
            except Exception as exc:
                logger.debug("scalable-otel: no spare telemetry process (%s)", exc)
                return
            with self._lock:
                if self._kept and len(self._spares) < self._size:
                    self._spares.append(spare)
                    spare = None
            if spare is not None:
                _end(spare)
                return

    @property
    def pids(self) -> list[int]:
        """The pids of the spares kept now, oldest first."""
        return [spare[0].pid for spare in list(self._spares)]


# What a process changes in its environment as it goes, and no telemetry process reads:
# pytest names the test phase running now (a suite's next test would otherwise end the
# spares started during the one before and wait for a new process).
_VOLATILE_ENV = frozenset({"PYTEST_CURRENT_TEST"})


def _fits(started_with: dict, now: dict) -> bool:
    """Whether a spare started with the environment `started_with` may record a run that
    starts with the environment `now`."""
    return {k: v for k, v in started_with.items() if k not in _VOLATILE_ENV} == {
        k: v for k, v in now.items() if k not in _VOLATILE_ENV
    }


def _end(spare: tuple) -> None:
    """End a spare telemetry process (it holds no run: nothing is lost)."""
    process, conn = spare[0], spare[1]
    try:
        conn.close()
    except OSError:
        pass
    if spare[3] != os.getpid():  # a forked copy's: not our child to end
        return
    if process.poll() is None:
        process.kill()
    process.wait()


SPARES = SpareProcesses()


def _write_crashed(config: RunConfig, summary: dict | None, now: float) -> None:
    """run.json as `crashed`, with the end time and the counts this process knows."""
    if not config.run_json:
        return
    try:
        data = run_json(
            **config.run_json, status=STATUS_CRASHED, ended=now, summary=summary, heartbeat=now
        )
        write_json_atomic(Path(config.run_dir) / RUN_JSON, data)
    except Exception as exc:
        logger.warning("scalable-otel: run.json not marked crashed (%s)", exc)


def collect_less() -> None:
    """Tune the garbage collector of the telemetry process, which runs nothing else.

    A young collection runs every 700 allocations by default and an older one every ten
    of those, each walking what the recorder holds (tasks in flight, the last ended ones);
    at a few hundred allocations a task that was a fifth of the process's CPU. What is
    built by now (modules, the pipeline) is frozen out of the collector, and collections
    run every 10,000 allocations: reference cycles are still freed, a little later."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _warm() -> None:
    """Import what a run's pipeline imports when it is built (the OTLP JSON copy in the
    run directory, on by default, needs protobuf) and freeze it out of the collector,
    before the run's start message: a spare process has it done when its run begins."""
    try:
        from .exporters import otlp_json  # noqa: F401
    except Exception:  # the build says so, if the run needs it
        pass
    collect_less()


def serve(conn: Connection) -> None:
    """The child: build the pipeline, handle batches until told to close."""
    _warm()
    try:
        message = conn.recv()
    except (EOFError, OSError):  # a spare never taken: its parent ended it, or died
        return
    config = RunConfig(**message[1])
    run = RunRecording(config, on_sync=lambda token: conn.send(("synced", token)))
    collect_less()
    conn.send(("ready", dict(run.pipeline.backends.where)))
    recorder = run.recorder
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the client died: keep what it sent, end the spans
            break
        if message[0] == "batch":
            try:
                run.batch(message[1], message[2])
            except Exception as exc:  # a malformed batch: counted, the next one is handled
                recorder._not_handled(message[:1], exc)
        elif message[0] == "close":
            summary = run.finish(message[1], message[2])
            conn.send(("closed", summary))
            return
    # The pipe ended without a close: the session's process died, so the run crashed
    # (however its tasks went), and the trace and run.json must not say it is running.
    now = time.time()
    summary = None
    try:
        summary = run.finish(now, STATUS_CRASHED)
    finally:
        _write_crashed(config, summary, now)
