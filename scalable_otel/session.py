"""ScalableSession: a Dask client whose every task is recorded in a run directory."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import cache
from . import semconv as sc
from .args import Redaction
from .exporters.columnar import write_columnar_copy_soon
from .exporters.settings import ExportOptions, ExportSettings, SettingsError, export_settings
from .instrumentation.scheduler_plugin import final_batches_wait, sync_scheduler_plugin
from .instrumentation.worker_plugin import final_flush
from .manifest import SLURM_JOB_ENV, Manifest, choose_target
from .options import (
    ClusterOptions,
    PipelineOptions,
    RecordingOptions,
    check_option,
    moved_keyword_error,
)
from .plan import PlanGraph, plan_header
from .recording import SPARES, ChildProcessRecording, Heartbeat, InThreadRecording, RunConfig
from .rundir import (
    PLAN_JSON,
    RunDirectory,
    new_run_id,
    run_json,
    runs_dir,
    write_json_atomic,
)
from .submission import MAP_OPTIONS, SUBMIT_OPTIONS, describe_tasks, map_keys, submit_key
from .telemetry import forward_spans_to, telemetry_disabled
from .termination import TERMINATION, exit_status
from .version import __version__

if TYPE_CHECKING:
    from typing_extensions import Never

logger = logging.getLogger(__name__)


def _export_settings(options: ExportOptions) -> ExportSettings:
    """The session's exporter settings; a bad variable turns exporters off, not the run."""
    try:
        return export_settings(options)
    except SettingsError as exc:
        logger.warning("scalable-otel: exporters off for this run: %s", exc)
        return ExportSettings()


def _process_start_time() -> float | None:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:
        return None


_PROCESS_START_TIME = _process_start_time()


def usable_cpus() -> int | None:
    """CPUs this process may run on (its affinity, else the host's count): run.json's
    `host_cpus`, which the what-if replay caps CPU-bound work of local workers at."""
    try:
        return len(os.sched_getaffinity(0)) or None
    except (AttributeError, OSError):
        return os.cpu_count()


TARGET_ENV = "SCALABLE_TARGET"
# The share of what is left of the close's deadline that the Dask close of a cluster the
# session started may take (at least CLUSTER_CLOSE_MIN_S): the rest is for the run's
# last records and its telemetry process, which take a fraction of a second when healthy.
CLUSTER_CLOSE_SHARE = 0.75
CLUSTER_CLOSE_MIN_S = 1.0
_STARTABLE = ("local", "slurm")  # providers whose cluster a session starts itself
_ADDRESS_PREFIXES = ("tcp://", "tls://", "ucx://", "inproc://", "ws://", "wss://")


# True while a session creates its own client: DaskInstrumentor leaves that client's run
# to the session.
session_owns_client: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "scalable_otel_session_owns_client", default=False
)


def keep_spare_recorders(options: dict | None) -> None:
    """Keep a telemetry process started ahead for the runs to come (`DaskInstrumentor`:
    a run for every client), when runs made with `options` (`ScalableSession.attach`'s
    keywords) record in a child process; None: keep none any more."""
    wanted = False
    if options is not None and not telemetry_disabled():
        recording = options.get("recording") or RecordingOptions()
        pipeline = options.get("pipeline") or PipelineOptions()
        wanted = (
            recording.recorder == "process"
            and not any(pipeline.as_kwargs().values())
            and options.get("meter_provider") is None
            and options.get("tracer_provider") is None
        )
    SPARES.keep(wanted)


def _own_client(address, asynchronous: bool = False):
    """A `distributed.Client` of the session's own (to `address`, a scheduler or a cluster);
    an asynchronous one is still to be awaited."""
    from distributed import Client

    token = session_owns_client.set(True)
    try:
        return Client(address, asynchronous=asynchronous)
    finally:
        session_owns_client.reset(token)


def _client_options(kwargs: dict, names) -> dict:
    return {name: kwargs.pop(name) for name in names if name in kwargs}


def _within(seconds: float, fn, *args, **kwargs) -> bool:
    """Call `fn` in a thread and wait for it at most `seconds`: whether it ended (its
    exception raised here). A call past its time goes on, unwaited for, in the thread."""
    outcome: list = []

    def call() -> None:
        try:
            fn(*args, **kwargs)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call, name="scalable-otel-close", daemon=True)
    thread.start()
    thread.join(max(0.0, seconds))
    if not outcome:
        return False
    if outcome[0] is not None:
        raise outcome[0]
    return True


@contextlib.contextmanager
def _timed(split: dict, part: str):
    """Add the seconds the block takes to `split[part]` (the close's parts, for benchmarks)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        split[part] = split.get(part, 0.0) + time.perf_counter() - t0


class ScalableSession:
    """Run a Dask workflow with telemetry: OTel spans, metrics and a JSONL run directory.

    Example::

        from scalable_otel import ScalableSession

        with ScalableSession(target="local", n_workers=2) as session:
            futures = session.map(run_simulation, range(100))
            results = session.gather(futures)
        print(session.run_dir)

    `target` is "local" (an embedded `LocalCluster` with worker processes), a
    scheduler address ("tcp://host:8786"), or the name of a target in the
    manifest; it defaults to $SCALABLE_TARGET, then a `slurm` target of the manifest
    inside a Slurm allocation ($SLURM_JOB_ID), then "local". Everything computed on
    `session.client` is recorded, not only `submit` and `map`. Telemetry is off with
    OTEL_SDK_DISABLED=true or SCALABLE_TELEMETRY=off.

    Keywords, each with what it defaults to (environment variables as $NAME); the rare
    settings are grouped into option objects, all importable from `scalable_otel`:

    - `n_workers`, `threads_per_worker`: the size of a cluster the session starts; else
      the manifest target's `max_workers` and `threads_per_worker`, else Dask's.
    - `project`: the run's project name; else the manifest's, else the current folder's.
    - `manifest`: a `Manifest`, a mapping or the path of a Scalable manifest file.
    - `runs_dir`: where run directories go; $SCALABLE_RUNS_DIR, else .scalable/runs.
    - `cache_dir`: where `cacheable` results go; $SCALABLE_CACHE_DIR, else .scalable/cache.
    - `asynchronous`: False; True for asyncio code, as Dask's own
      `Client(asynchronous=True)`: enter the session with `async with` (or
      `session = await ScalableSession(...)`, then `await session.close()`);
      `session.client` is an asynchronous Dask client, `submit`, `map` and `compute`
      return Dask futures (`await future` gives a result), `gather` an awaitable. The
      telemetry's own start and close (its process, the last flush, run.json) run in
      threads, never on the event loop; `with` on such a session raises a RuntimeError.
    - `progress`: a progress bar on stderr while the run goes on (tasks done, failed,
      running and queued per task name, throughput and ETA), drawn from the run
      directory as `scalable watch` draws it; else $SCALABLE_PROGRESS (on/off), else
      on only when stderr is a terminal (off in scripts and batch jobs).
    - `cluster=ClusterOptions(memory_limit=..., extra={...})`: the rest of a started
      cluster: memory per worker (else the manifest target's `memory`) and more
      `LocalCluster`/`SLURMCluster` keywords.
    - `exports=ExportOptions(otlp_endpoint=..., otlp_protocol=..., otlp_headers=...,
      traces_exporter=..., metrics_exporter=..., prometheus_port=..., prometheus_host=...,
      pushgateway_url=..., otlp_file=...)`: where spans and metrics go besides the run
      directory; each option left at None comes from OpenTelemetry's variable
      ($OTEL_EXPORTER_OTLP_ENDPOINT, _PROTOCOL, _HEADERS, $OTEL_TRACES_EXPORTER,
      $OTEL_METRICS_EXPORTER) or ours ($SCALABLE_PROMETHEUS_PORT, _HOST,
      $SCALABLE_PUSHGATEWAY_URL, $SCALABLE_OTLP_FILE). A bad variable or an unreachable
      backend turns that exporter off with one warning.
    - `redaction=Redaction(names=[...], values=[...], record_args=...)`: task arguments
      are summarized (bounded, secrets redacted; see `scalable_otel.args`); `names` adds
      parameter names to redact ($SCALABLE_REDACT_NAMES), `values` regular expressions
      for values (also cut out of error messages and tracebacks), `record_args=False`
      keeps no arguments ($SCALABLE_RECORD_ARGS=off).
    - `pipeline=PipelineOptions(span_processors=[...], metric_readers=[...],
      log_processors=[...])`: your own OpenTelemetry components beside the run directory.
    - `recording=RecordingOptions(recorder=..., flush_interval=..., resource_interval=...,
      close_timeout=...)`: the run's OTel work happens in a small child process
      (`recorder="process"`), away from the scheduler's GIL, or in a thread here
      (`"thread"`, and always with `pipeline`, whose objects live in this process);
      workers report every `flush_interval` seconds (0.2) and sample CPU and memory every
      `resource_interval` (1.0); the close waits at most `close_timeout` seconds (10,
      $SCALABLE_CLOSE_TIMEOUT) for the run's last records and its telemetry process.

    A keyword of scalable-otel 0.1 that moved into an option object
    (`otlp_endpoint=`, `redact_names=`, `recorder=`...) raises a TypeError naming the
    object to use; an option object of the wrong type raises a TypeError naming it.

    While a run is recorded, SIGTERM (what Slurm sends a job it preempts or cancels)
    raises `SystemExit(143)` in the main thread: the `with` block ends, the run is
    closed as `interrupted`, and the process exits with code 143 unless the exception is
    caught. Ctrl-C (SIGINT, `KeyboardInterrupt`) closes the run as `interrupted` too.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        project: str | None = None,
        manifest: Manifest | dict | str | os.PathLike | None = None,
        runs_dir: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        cluster: ClusterOptions | None = None,
        exports: ExportOptions | None = None,
        redaction: Redaction | None = None,
        pipeline: PipelineOptions | None = None,
        recording: RecordingOptions | None = None,
        progress: bool | None = None,
        asynchronous: bool = False,
        **moved: Never,
    ):
        if moved:
            raise moved_keyword_error("ScalableSession", next(iter(moved)))
        if not isinstance(asynchronous, bool):
            raise TypeError(f"asynchronous must be True or False, not {asynchronous!r}")
        self.asynchronous = asynchronous
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress must be True, False or None, not {progress!r}")
        self.progress = progress
        self._progress_bar = None
        self.cluster_options = check_option("cluster", cluster, ClusterOptions)
        self.export_options = check_option("exports", exports, ExportOptions)
        self.pipeline_options = check_option("pipeline", pipeline, PipelineOptions)
        self.recording_options = check_option("recording", recording, RecordingOptions)
        # what task argument summaries hide (names, value patterns) and whether they are
        # kept: the given redaction, what it leaves at None from the environment
        self.redaction = check_option("redaction", redaction, Redaction).with_env()
        if isinstance(manifest, dict):
            manifest = Manifest.from_dict(manifest)
        elif isinstance(manifest, (str, os.PathLike)):
            manifest = Manifest.load(manifest)
        self.manifest = manifest
        # the argument, $SCALABLE_TARGET, a slurm target inside a Slurm allocation, local
        name, settings, self.provider = choose_target(manifest, target, os.environ)
        # a manifest target of provider `address` names its scheduler under `address:`
        self.target = str(settings.get("address") or name) if self.provider == "address" else name
        startable = self.provider in _STARTABLE or self.target.startswith(_ADDRESS_PREFIXES)
        if not startable:
            why = ""
            env_target = os.environ.get(TARGET_ENV, "").strip()
            if not target and not env_target and os.environ.get(SLURM_JOB_ENV):
                why = (
                    f" (chosen because ${SLURM_JOB_ENV} is set: pass target='local' or set "
                    f"${TARGET_ENV}=local to run in this allocation)"
                )
            raise ValueError(
                f"target {self.target!r}: provider {self.provider!r} is not "
                f"supported yet (use 'local', 'slurm' or a scheduler address){why}"
            )
        self.settings = settings
        self.project = project or (manifest.project if manifest else None) or Path.cwd().name
        self.n_workers = n_workers if n_workers is not None else settings.get("max_workers")
        self.threads_per_worker = (
            threads_per_worker
            if threads_per_worker is not None
            else settings.get("threads_per_worker")
        )
        memory_limit = self.cluster_options.memory_limit
        self.memory_limit = memory_limit if memory_limit is not None else settings.get("memory")
        self.runs_root = runs_dir
        self.cache_dir = Path(
            cache_dir or os.environ.get(cache.CACHE_DIR_ENV) or cache.DEFAULT_CACHE_DIR
        ).absolute()
        self._exports = _export_settings(self.export_options)  # resolved: what the run uses
        self.client = None
        self.cluster = None
        self.run_dir: Path | None = None
        self.run_id: str | None = None
        # chosen here so that workers can put spans made inside tasks in the run's trace
        self.trace_id = f"{secrets.randbits(128) or 1:032x}"
        self.status: str | None = None
        self._terminated = False  # a SIGTERM arrived while the run was recorded
        self._recording = None
        self._heartbeat: Heartbeat | None = None
        self._plugins_attached = False  # the session's plugins are on the cluster
        self._rundir: RunDirectory | None = None
        self._plan_graph: PlanGraph | None = None  # plan.json's graph, kept up during the run
        self._attached = False  # set by attach(): the client is the caller's, never closed here
        self._begun = False  # the run of an attached session has started
        self._cache_sink = None  # where this run takes the driver's cache lookups
        # seconds spent in each part of the last close (last_records, dask, telemetry,
        # plan, run_json, columnar): what a benchmark prints
        self.close_split: dict[str, float] = {}
        # the process writing the run's columnar copy after the close (a large run), if any
        self._columnar_copy = None

    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike | None = None, target: str | None = None, **kwargs
    ) -> ScalableSession:
        """A session from a Scalable manifest (path defaults to $SCALABLE_MANIFEST, then
        ./scalable.yaml); `target` names one of its targets."""
        manifest = Manifest.load(path)
        return cls(target=target, manifest=manifest, **kwargs)

    _meter_provider = None  # attach(meter_provider=): the run's metrics recorded there too

    @classmethod
    def attach(
        cls,
        client,
        *,
        project: str | None = None,
        manifest: Manifest | dict | str | os.PathLike | None = None,
        runs_dir: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        exports: ExportOptions | None = None,
        redaction: Redaction | None = None,
        pipeline: PipelineOptions | None = None,
        recording: RecordingOptions | None = None,
        progress: bool | None = None,
        tracer_provider=None,
        meter_provider=None,
        **moved: Never,
    ) -> ScalableSession:
        """Record a run on a `distributed.Client` that this session did not create.

        Example::

            from distributed import Client
            from scalable_otel import ScalableSession

            with Client("tcp://scheduler:8786") as client:
                with ScalableSession.attach(client, project="demeter") as session:
                    client.gather(client.map(run_simulation, range(100)))
                print(session.run_dir)  # finished; the client still runs

        The run starts now, on whatever scheduler the client is connected to (its
        address is the run's target), and holds the tasks this client asks for from now
        on (other clients of that scheduler have theirs, or none). It ends at `close()`
        (or the end of the `with`),
        which takes the session's plugins off the scheduler and workers and finishes
        run.json, but never closes the client or its cluster.

        `tracer_provider`: an SDK `TracerProvider` whose span processors also receive the
        run's spans (same trace and span ids as the run directory). `meter_provider`: the
        run's metrics are also recorded on a meter of it (scope `scalable_otel`); this keeps
        the run's recorder in a thread of this process. The other keywords, and their
        environment variables, are those of `ScalableSession` (no cluster is started, so
        there is no `n_workers` nor `cluster`).

        An asynchronous client (`Client(asynchronous=True)`) gives an asynchronous
        session, whose run starts when it is awaited or entered::

            async with ScalableSession.attach(client, project="demeter") as session:
                await client.gather(client.map(run_simulation, range(100)))
        """

        if moved:
            raise moved_keyword_error("ScalableSession.attach", next(iter(moved)))
        pipeline = check_option("pipeline", pipeline, PipelineOptions)
        recording = check_option("recording", recording, RecordingOptions)
        if tracer_provider is not None:
            forward = forward_spans_to(tracer_provider)
            if forward is not None:
                pipeline = replace(pipeline, span_processors=(*pipeline.span_processors, forward))
        if meter_provider is not None:  # the mirrored instruments live in this process
            recording = replace(recording, recorder="thread")
        address = client.scheduler.address
        session = cls(
            address,
            asynchronous=bool(client.asynchronous),
            project=project,
            manifest=manifest,
            runs_dir=runs_dir,
            cache_dir=cache_dir,
            exports=exports,
            redaction=redaction,
            pipeline=pipeline,
            recording=recording,
            progress=progress,
        )
        session._attached = True
        session._meter_provider = meter_provider
        session.client = client
        if not session.asynchronous:  # an asynchronous one begins when awaited or entered
            session._begin_attached()
        return session

    def _begin_attached(self) -> None:
        """Start the run of an attached session (telemetry failures are warned of)."""
        from .instrumentation.scheduler_plugin import TaskRecordPlugin

        self._begun = True
        self._started = time.time()
        # the scheduler may be in another process (or a copy of the plugin is made when it
        # is registered): its records come back through the client, as for a remote target
        plugin = TaskRecordPlugin(forward=True, clients=())
        if telemetry_disabled() or not self._open_telemetry(plugin):
            return
        self._attach_telemetry(plugin, remote=True)
        self._start_progress()

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> ScalableSession:
        self._synchronous_only("with ScalableSession(...)", "async with")
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(status=exit_status(exc_type))

    async def __aenter__(self) -> ScalableSession:
        self._asynchronous_only("async with")
        return await self.start()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.close(status=exit_status(exc_type))

    def __await__(self):
        """`session = await ScalableSession(..., asynchronous=True)`: the started session."""
        self._asynchronous_only("await ScalableSession(...)")
        return self.start().__await__()

    def _synchronous_only(self, what: str, instead: str) -> None:
        if self.asynchronous:
            raise RuntimeError(
                f"{what} needs a synchronous session; this one is asynchronous "
                f"(asynchronous=True, or attached to an asynchronous client): use `{instead}`"
            )

    def _asynchronous_only(self, what: str) -> None:
        if not self.asynchronous:
            raise RuntimeError(
                f"{what} needs ScalableSession(..., asynchronous=True); "
                "use `with` for this synchronous session"
            )

    def start(self) -> ScalableSession:
        """Open the run directory and the OTel pipeline, then start or connect to Dask.

        On an asynchronous session it returns an awaitable of the started session."""
        if self.asynchronous:
            from .async_session import start

            return start(self, remote=self.target.startswith(_ADDRESS_PREFIXES))
        if self._attached:  # attach() started the run on the caller's client
            return self
        from .instrumentation.scheduler_plugin import TaskRecordPlugin

        self._started = time.time()
        remote = self.target.startswith(_ADDRESS_PREFIXES)
        plugin = TaskRecordPlugin(forward=remote, clients=())
        telemetry = not telemetry_disabled() and self._open_telemetry(plugin)
        try:
            if remote:
                self.client = _own_client(self.target)
            else:
                self.cluster = self._start_cluster([plugin] if telemetry else [])
                self.client = _own_client(self.cluster)
        except BaseException as exc:
            if telemetry:  # the run ends before it began: say so in run.json
                self._finish_telemetry(exit_status(type(exc)))
                TERMINATION.end_close(self, counted=False)
            raise
        if telemetry:
            self._attach_telemetry(plugin, remote)
            self._start_progress()
        return self

    def _start_progress(self) -> None:
        """The progress bar, when wanted; never raises into the workflow."""
        try:
            from .progress_view import ProgressBar, progress_wanted

            if self.run_dir is not None and progress_wanted(self.progress):
                self._progress_bar = ProgressBar(self.run_dir).start()
        except Exception as exc:
            logger.warning("scalable-otel: progress bar off (%s); the workflow goes on", exc)

    def _stop_progress(self) -> None:
        bar, self._progress_bar = self._progress_bar, None
        if bar is not None:
            bar.stop(self.status)  # swallows its own errors

    def _attach_telemetry(self, plugin, remote: bool) -> None:
        """Put the plugins on the client's cluster and wait for the recorder; never raises."""
        try:
            self._instrument_client(plugin, remote)
            self._plugins_attached = True
            self._recorder_ready()
        except Exception as exc:
            logger.warning(
                "scalable-otel: telemetry not attached to Dask (%s); the workflow goes on", exc
            )

    def _recorder_ready(self) -> None:
        """Wait until the recorder is ready (blocks; a thread's work in an asynchronous
        session), then say where its exporters are."""
        if not self._recording.wait_ready():
            logger.warning("scalable-otel: the telemetry process did not start")
        elif self._recording.exporters is not None:
            # a scrape endpoint on port 0 has its real port now: say so while the run goes
            self._write_run_json(sc.RUN_RUNNING)

    def _start_cluster(self, plugins):
        from .clusters import start_cluster

        return start_cluster(
            self.provider,
            self.settings,
            n_workers=self.n_workers,
            threads_per_worker=self.threads_per_worker,
            memory_limit=self.memory_limit,
            plugins=plugins,
            # an asynchronous cluster is still to be awaited, on the session's loop
            extra={**self.cluster_options.extra, "asynchronous": True}
            if self.asynchronous
            else self.cluster_options.extra,
        )

    def _open_telemetry(self, plugin) -> bool:
        """Create the run directory and the pipeline; on failure warn once and run without."""
        try:
            self.run_id = new_run_id(self.project)
            plugin.run_id = self.run_id  # its name, topics and task annotation say whose
            self._rundir = RunDirectory.create(runs_dir(self.runs_root).absolute(), self.run_id)
            self.run_dir = self._rundir.path
            self._write_run_json(sc.RUN_RUNNING)
            manifest_path = self.run_dir / "manifest.yaml"
            manifest_path.touch(mode=0o600)
            manifest_path.write_text(self._manifest().to_yaml())
            header = self._plan_header()
            write_json_atomic(self.run_dir / PLAN_JSON, header)
            config = RunConfig(
                run_dir=str(self.run_dir),
                run_id=self.run_id,
                project=self.project,
                target=self.target,
                provider=self.provider,
                started=self._started,
                flush_interval=self.recording_options.flush_interval,
                trace_id=self.trace_id,
                exports=self._exports.to_dict(),
                redact_values=self.redaction.value_patterns(),
                run_json=self._run_json_kwargs(),
                energy=self.settings.get("energy")
                if isinstance(self.settings.get("energy"), dict)
                else None,
            )
            processors = {
                **self.pipeline_options.as_kwargs(),
                "meter_provider": self._meter_provider,
            }
            if self.recording_options.recorder == "process" and not any(processors.values()):
                try:
                    self._recording = ChildProcessRecording(config, plugin.records)
                except Exception as exc:  # no child process here: record in a thread instead
                    logger.info("scalable-otel: recording in a thread (%s)", exc)
            if self._recording is None:
                self._recording = InThreadRecording(config, plugin.records, **processors)
            self._heartbeat = Heartbeat(
                lambda now: self._write_run_json(sc.RUN_RUNNING, heartbeat=now)
            )
            self._plan_graph = PlanGraph(self.run_dir, self._manifest(), header)
            self._plan_graph.follow()
        except Exception as exc:
            logger.warning(
                "scalable-otel: telemetry is off for this run (%s); the workflow goes on", exc
            )
            self._recording = None
            return False
        TERMINATION.add(self)  # from now on a SIGTERM closes the run as interrupted
        return True

    def _instrument_client(self, plugin, remote: bool) -> None:
        for each in self._client_plugins(plugin, remote):
            self.client.register_plugin(each, name=each.name)
        self._watch_driver_cache()

    def _client_plugins(self, plugin, remote: bool) -> list:
        """Subscribe to the run's records and give the plugins to register on the client's
        cluster: a remote scheduler's, which registers the workers' as it starts (leaving
        no comm to a worker open), then the workers' (a no-op after that: it is idempotent,
        and it registers them only where the scheduler's plugin could not)."""
        from distributed.protocol.pickle import dumps

        from .instrumentation.worker_plugin import WorkerTelemetryPlugin

        recording = self._recording
        inbox = recording.inbox
        plugin.record_client(self.client.id)  # the run's tasks: those its client asks for
        worker_plugin = WorkerTelemetryPlugin(
            resource_interval=self.recording_options.resource_interval,
            flush_interval=self.recording_options.flush_interval,
            cache_dir=str(self.cache_dir),
            run_id=self.run_id,
            trace_id=self.trace_id,
            redact_values=self.redaction.value_patterns(),
        )
        if not remote:
            return [worker_plugin]

        def on_records(event):
            inbox.append((sc.RECORD_FORWARDED, event[0], event[1]))
            recording.arrived()

        self.client.subscribe_topic(plugin.forward_topic, on_records)
        plugin.worker_plugin = (worker_plugin.name, dumps(worker_plugin))
        return [plugin, worker_plugin]

    def _watch_driver_cache(self) -> None:
        """This process's cache lookups (and the Scalable tool's) go to the run."""
        from .instrumentation.scalable_library import watch_when_reporting

        watch_when_reporting()
        inbox = self._recording.inbox
        self._cache_sink = lambda record: inbox.append((sc.RECORD_CACHE, record))
        cache.set_driver_sink(self._cache_sink, str(self.cache_dir))

    def close(self, status: str | None = None) -> None:
        """Finish the run: flush workers, close Dask, end spans, write run.json.

        A session from `attach()` leaves the client and its cluster running. On an
        asynchronous session it returns an awaitable (as Dask's `Client.close`)."""
        if self.asynchronous:
            from .async_session import close

            return close(self, status)
        counted = TERMINATION.begin_close()
        try:
            self._close(status)
        finally:
            try:
                self._stop_progress()  # its last state: every line is on disk now
            finally:
                TERMINATION.end_close(self, counted)

    def _close(self, status: str | None) -> None:
        # One deadline for every wait from here (`RecordingOptions.close_timeout`): a
        # stopped telemetry process or an unreachable scheduler costs the run's last
        # records, never the Slurm job's grace time.
        deadline = time.monotonic() + self.recording_options.close_timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        split = self.close_split = {}
        recording = self._recording
        token = None  # the sync mark the recorder is still to reach
        if recording is not None:
            with _timed(split, "last_records"):
                try:
                    if self._plugins_attached and self._connected():
                        token = self._mark_last_records(left)
                    # A scheduler of another process forwards its records through the
                    # client: they must arrive before the client closes. One in this process
                    # put them in the recorder's queue already, so the telemetry process
                    # works through them while Dask closes, and the mark is awaited after.
                    if token is not None and self.cluster is None:
                        self._await_last_records(recording, token, left)
                        token = None
                except Exception:
                    logger.debug("scalable-otel: final worker flush failed", exc_info=True)
                self._closing(recording)
        try:
            with _timed(split, "dask"):
                if self.cluster is None and recording is not None and self._connected():
                    try:
                        if not _within(left(), self._detach_from_cluster):
                            logger.debug("scalable-otel: plugins not unregistered in time")
                    except Exception:
                        logger.debug("scalable-otel: plugins not unregistered", exc_info=True)
                if self.client is not None and not self._attached:
                    self.client.close()
                if self.cluster is not None:
                    self._close_cluster(self._cluster_close_timeout(left()))
        finally:
            if recording is not None:
                if token is not None:
                    with _timed(split, "last_records"):
                        self._await_last_records(recording, token, left)
                self._finish_telemetry(status, timeout=left())

    def _connected(self) -> bool:
        """Whether the client is still connected to its scheduler. One that lost it (the
        scheduler closed or died) has no plugins of the run left to flush or take off, and
        each call would wait for it to reconnect: the close skips them."""
        return getattr(self.client, "status", None) == "running"

    def _closing(self, recording) -> None:
        """From now on the recorder reads a worker's end as the close's, not a crash, and
        this process's cache lookups go to no run."""
        recording.mark_closing()
        cache.clear_driver_sink(self._cache_sink)

    @staticmethod
    def _cluster_close_timeout(left: float) -> float:
        """What the Dask close of a cluster the session started may take of the `left`
        seconds of the close's deadline."""
        return max(left * CLUSTER_CLOSE_SHARE, CLUSTER_CLOSE_MIN_S)

    def _timing(self, part: str):
        """A context manager adding the seconds its block takes to `close_split[part]`."""
        return _timed(self.close_split, part)

    def _new_client(self, address):
        """A client of the session's own to `address` (a scheduler or a cluster), of the
        session's kind: an asynchronous one is still to be awaited."""
        return _own_client(address, self.asynchronous)

    def _close_cluster(self, timeout: float) -> None:
        """Close the cluster this session started, waiting for it at most `timeout` seconds:
        a nanny that restarts a worker as the cluster closes can wait forever (seen with
        distributed 2024.12 after workers were killed), and the run must still end."""
        try:
            self.cluster.close(timeout=timeout)
        except (TimeoutError, asyncio.TimeoutError):
            logger.warning(
                "scalable-otel: the Dask cluster did not close within %.0f s; "
                "the run ends without waiting for it",
                timeout,
            )

    def _mark_last_records(self, left) -> str | None:
        """Have the workers send what they hold, then put a sync mark after the scheduler's
        records up to now; half the time left at most for each. The mark's token, or None."""
        worker_plugin = sc.per_run(sc.WORKER_PLUGIN_NAME, self.run_id)
        token = uuid.uuid4().hex
        flushed: dict = {}

        def flush() -> None:  # and each worker's heartbeat, in the same round trip
            run = self.client.run
            flushed.update(run(final_flush, name=worker_plugin, token=token, heartbeat=True))

        if not _within(left() / 2, flush):
            return None
        scheduler = self.client.run_on_scheduler
        plugin = sc.per_run(sc.SCHEDULER_PLUGIN_NAME, self.run_id)
        marked = _within(
            left() / 2,
            scheduler,
            sync_scheduler_plugin,
            token=token,
            name=plugin,
            workers=[worker for worker, had_plugin in flushed.items() if had_plugin],
            timeout=final_batches_wait(left()),
        )
        return token if marked else None

    def _await_last_records(self, recording, token: str, left) -> None:
        """Wait until the recorder reached the mark `token`: half the time left at most,
        the rest is the close's."""
        try:
            arrived = recording.sync(token, timeout=left() / 2)
        except Exception:
            logger.debug("scalable-otel: final sync failed", exc_info=True)
            return
        if not arrived:
            logger.warning(
                "scalable-otel: the last records from the scheduler did "
                "not arrive in time; the run directory may miss them"
            )

    def _detach_from_cluster(self) -> None:
        """Leave a cluster we did not start as we found it: no plugins of this run behind
        (another run's on the same scheduler go on)."""
        self.client.unsubscribe_topic(sc.per_run(sc.FORWARD_TOPIC, self.run_id))
        self.client.unregister_worker_plugin(sc.per_run(sc.WORKER_PLUGIN_NAME, self.run_id))
        self.client.unregister_scheduler_plugin(sc.per_run(sc.SCHEDULER_PLUGIN_NAME, self.run_id))

    def _finish_telemetry(self, status: str | None, timeout: float | None = None) -> None:
        """End the run's telemetry and write run.json; never raises into the workflow."""
        try:
            self._end_telemetry(status, timeout)
        except Exception as exc:
            if self._plan_graph is not None:
                self._plan_graph.close()
            self._recording = None
            logger.warning(
                "scalable-otel: the run's telemetry did not finish (%s); the workflow goes on",
                self.redaction.scrub(f"{type(exc).__name__}: {exc}"),
            )

    def _end_telemetry(self, status: str | None, timeout: float | None) -> None:
        if self._heartbeat is not None:  # before the last run.json: none may follow it
            self._heartbeat.stop()
        ended = time.time()
        if status is None and self._terminated:
            status = sc.RUN_INTERRUPTED
        recording = self._recording
        if timeout is None:
            timeout = self.recording_options.close_timeout
        split = self.close_split
        with _timed(split, "telemetry"):
            summary = recording.close(ended, status, timeout=timeout)
        self._recording = None
        if summary is None:
            logger.warning(
                "scalable-otel: the telemetry process did not report its end; "
                "run.json has no task counts"
            )
            # the workflow's own outcome is known; its task counts are not
            summary = {"status": status or sc.RUN_COMPLETED, "telemetry_lost": True}
        summary.update(recording.driver_counts())
        self.status = summary["status"]
        with _timed(split, "plan"):
            try:
                self._plan_graph.write()
            except Exception:
                logger.debug("scalable-otel: plan.json not rewritten", exc_info=True)
            finally:
                self._plan_graph.close()
        try:
            with _timed(split, "run_json"):
                self._write_run_json(self.status, ended, summary)
        except OSError as exc:  # a full or read-only disk must not fail a finished workflow
            # one warning a run: the telemetry process gave it if its own writes failed
            warned = summary.get("telemetry_write_error")
            (logger.debug if warned else logger.warning)(
                "scalable-otel: cannot write telemetry to %s (%s); the workflow goes on, "
                "run.json keeps what it said when the run started",
                self.run_dir,
                exc.strerror or exc,
            )
            return
        with _timed(split, "columnar"):
            self._columnar_copy = write_columnar_copy_soon(self.run_dir)

    # --- run directory content ----------------------------------------------------------
    def _manifest(self) -> Manifest:
        if self.manifest is not None:
            return self.manifest
        target = {"provider": self.provider}
        if self.n_workers is not None:
            target["max_workers"] = self.n_workers
        if self.threads_per_worker is not None:
            target["threads_per_worker"] = self.threads_per_worker
        return Manifest.from_dict(
            {"version": 1, "project": {"name": self.project}, "targets": {self.target: target}}
        )

    def _run_json_kwargs(self) -> dict:
        """`rundir.run_json`'s keywords but status, ended, summary and heartbeat (plain
        data: the telemetry process writes run.json with them if this process dies)."""
        return {
            "run_id": self.run_id,
            "project": self.project,
            "started": self._started,
            "target": self.target,
            "provider": self.provider,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start_time": _PROCESS_START_TIME,
            "host_cpus": usable_cpus(),
            "manifest_hash": self._manifest().hash,
            "trace_id": self.trace_id,
            "exporters": self._exporters(),
            "settings": {
                "n_workers": self.n_workers,
                "threads_per_worker": self.threads_per_worker,
                "resource_interval_s": self.recording_options.resource_interval,
                "flush_interval_s": self.recording_options.flush_interval,
            },
            "versions": _versions(__version__),
        }

    def _exporters(self) -> dict:
        """Where the run's telemetry goes besides the run directory: as the pipeline built
        it, once it is ready (a port 0 made real), else as the settings ask."""
        recording = self._recording
        live = getattr(recording, "exporters", None) if recording is not None else None
        return dict(live) if live is not None else self._exports.describe()

    def _write_run_json(
        self, status: str, ended=None, summary: dict | None = None, heartbeat=None
    ) -> None:
        data = run_json(
            **self._run_json_kwargs(),
            status=status,
            ended=ended,
            summary=summary,
            heartbeat=heartbeat,
        )
        self._rundir.write_run_json(data)

    def _plan_header(self) -> dict:
        return plan_header(
            self._manifest(), run_id=self.run_id, target=self.target, provider=self.provider
        )

    # --- Dask API ---------------------------------------------------------------------------
    def submit(self, fn, *args, key=None, pure: bool = True, **kwargs):
        """`Client.submit`, with the task's name and a summary of its arguments recorded."""
        options = _client_options(kwargs, SUBMIT_OPTIONS)
        if key is None:
            key = submit_key(fn, args, kwargs, pure)
        describe_tasks(self._recording, fn, [(key, args)], kwargs, redaction=self.redaction)
        return self.client.submit(fn, *args, key=key, pure=pure, **options, **kwargs)

    def map(self, fn, *iterables, key=None, pure: bool = True, **kwargs):
        """`Client.map` (any iterables, generators included), each task recorded by name."""
        options = _client_options(kwargs, MAP_OPTIONS)
        iterables = [it if isinstance(it, (list, tuple)) else list(it) for it in iterables]
        key = map_keys(fn, iterables, kwargs, key, pure)
        describe_tasks(
            self._recording, fn, zip(key, zip(*iterables)), kwargs, redaction=self.redaction
        )
        return self.client.map(fn, *iterables, key=key, pure=pure, **options, **kwargs)

    def gather(self, futures, errors: str = "raise", **kwargs):
        """`Client.gather`."""
        return self.client.gather(futures, errors=errors, **kwargs)

    def compute(self, collections, **kwargs):
        """`Client.compute`."""
        return self.client.compute(collections, **kwargs)

    def span(self, *names: str):
        """`distributed.span(*names)`: a context manager grouping the tasks submitted in it
        (nested blocks too) under one group span of the run's trace, with the group's id
        and path in each of their tasks.jsonl lines; it yields Dask's id of the span.

        The same mechanism as Dask's own: `with session.span("calibration"):` and
        `with distributed.span("calibration"):` record alike.
        """
        from distributed import span

        return span(*names)


@functools.lru_cache(maxsize=1)
def _versions(own: str) -> dict:
    import platform

    import dask
    import distributed
    from opentelemetry.version import __version__ as otel

    return {
        "scalable_otel": own,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "opentelemetry": otel,
        "python": platform.python_version(),
    }
