"""ScalableSession: a Dask client whose every task is recorded in a run directory."""

from __future__ import annotations

import functools
import logging
import os
import secrets
import socket
import time
import uuid
from pathlib import Path

from . import cache
from . import semconv as sc
from .args import Redaction
from .exporters.settings import ExportSettings, SettingsError, export_settings
from .instrumentation.scheduler_plugin import sync_scheduler_plugin
from .manifest import SLURM_JOB_ENV, Manifest, choose_target
from .recording import ChildProcessRecording, InThreadRecording, RunConfig
from .rundir import (
    PLAN_JSON,
    TASKS,
    RunDirectory,
    iter_lines,
    new_run_id,
    run_json,
    runs_dir,
    write_json_atomic,
)
from .submission import MAP_OPTIONS, SUBMIT_OPTIONS, describe_tasks, map_keys, submit_key
from .telemetry import telemetry_disabled
from .termination import TERMINATION

logger = logging.getLogger(__name__)


def _export_settings(**args) -> ExportSettings:
    """The session's exporter settings; a bad one turns exporters off, not the run."""
    try:
        return export_settings(**args)
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

TARGET_ENV = "SCALABLE_TARGET"
_STARTABLE = ("local", "slurm")  # providers whose cluster a session starts itself
_ADDRESS_PREFIXES = ("tcp://", "tls://", "ucx://", "inproc://", "ws://", "wss://")


def _exit_status(exc_type) -> str | None:
    """The run status for leaving a session by `exc_type` (None: no exception)."""
    if exc_type is None:
        return None
    return "interrupted" if issubclass(exc_type, (KeyboardInterrupt, SystemExit)) else "failed"


def _client_options(kwargs: dict, names) -> dict:
    return {name: kwargs.pop(name) for name in names if name in kwargs}


def _worker_flush(dask_worker) -> None:
    plugin = dask_worker.plugins.get(sc.WORKER_PLUGIN_NAME)
    if plugin is not None:
        plugin.final_flush()


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
    manifest; it defaults to $SCALABLE_TARGET, then "local". Everything
    computed on `session.client` is recorded, not only `submit` and `map`.
    Telemetry is off with OTEL_SDK_DISABLED=true or SCALABLE_TELEMETRY=off.

    The OTel work of the run happens in a small child process (`recorder="process"`),
    away from the scheduler's GIL; with `span_processors`, `metric_readers` or
    `log_processors` (Python objects of this process) it happens in a thread here.

    Besides the run directory, spans and metrics go where OpenTelemetry's variables say
    (`OTEL_EXPORTER_OTLP_ENDPOINT`, `_PROTOCOL`, `_HEADERS`, `OTEL_TRACES_EXPORTER`,
    `OTEL_METRICS_EXPORTER`), or the arguments `otlp_endpoint`, `otlp_protocol`
    ("grpc" or "http/protobuf"), `otlp_headers`, `traces_exporter`, `metrics_exporter`;
    `prometheus_port` serves the metrics for Prometheus to scrape (on 127.0.0.1; 0
    picks a free port), `pushgateway_url` pushes their final values when the run ends.
    `otlp_file=False` (or SCALABLE_OTLP_FILE=off) leaves out the run directory's
    `traces.otlp.jsonl`, the spans that `scalable export --otlp` replays.
    A bad setting or an unreachable backend turns that exporter off with one warning.

    `manifest` is a `Manifest`, a mapping or the path of a Scalable manifest file. Task
    arguments are summarized (bounded, secrets redacted; see `scalable_otel.args`):
    `redact_names` adds parameter names to redact, `redact_values` regular expressions
    for values (also cut out of error messages and tracebacks), `record_args=False`
    keeps no arguments ($SCALABLE_REDACT_NAMES and $SCALABLE_RECORD_ARGS=off likewise).

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
        memory_limit=None,
        project: str | None = None,
        manifest: Manifest | dict | str | os.PathLike | None = None,
        runs_dir: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        resource_interval: float = 1.0,
        flush_interval: float = 0.2,
        span_processors=(),
        metric_readers=(),
        log_processors=(),
        otlp_endpoint: str | None = None,
        otlp_protocol: str | None = None,
        otlp_headers: dict[str, str] | None = None,
        traces_exporter: str | None = None,
        metrics_exporter: str | None = None,
        prometheus_port: int | None = None,
        pushgateway_url: str | None = None,
        otlp_file: bool | None = None,
        cluster_kwargs: dict | None = None,
        recorder: str = "process",
        redact_names=None,
        redact_values=None,
        record_args: bool | None = None,
    ):
        if isinstance(manifest, dict):
            manifest = Manifest.from_dict(manifest)
        elif isinstance(manifest, (str, os.PathLike)):
            manifest = Manifest.load(manifest)
        # what task argument summaries hide (names, value patterns) and whether they are kept
        self.redaction = Redaction.from_env(redact_names, redact_values, record_args)
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
        self.memory_limit = memory_limit if memory_limit is not None else settings.get("memory")
        self.runs_root = runs_dir
        self.cache_dir = Path(
            cache_dir or os.environ.get(cache.CACHE_DIR_ENV) or cache.DEFAULT_CACHE_DIR
        ).absolute()
        self.resource_interval = resource_interval
        self.flush_interval = flush_interval
        self._span_processors = span_processors
        self._metric_readers = metric_readers
        self._log_processors = log_processors
        self._exports = _export_settings(
            otlp_endpoint=otlp_endpoint,
            otlp_protocol=otlp_protocol,
            otlp_headers=otlp_headers,
            traces_exporter=traces_exporter,
            metrics_exporter=metrics_exporter,
            prometheus_port=prometheus_port,
            pushgateway_url=pushgateway_url,
            otlp_file=otlp_file,
        )
        self._cluster_kwargs = cluster_kwargs or {}
        if recorder not in ("process", "thread"):
            raise ValueError(f"recorder must be 'process' or 'thread', not {recorder!r}")
        self.recorder = recorder
        self.client = None
        self.cluster = None
        self.run_dir: Path | None = None
        self.run_id: str | None = None
        # chosen here so that workers can put spans made inside tasks in the run's trace
        self.trace_id = f"{secrets.randbits(128) or 1:032x}"
        self.status: str | None = None
        self._terminated = False  # a SIGTERM arrived while the run was recorded
        self._recording = None
        self._rundir: RunDirectory | None = None
        self._attached = False  # set by attach(): the client is the caller's, never closed here

    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike | None = None, target: str | None = None, **kwargs
    ) -> ScalableSession:
        """A session from a Scalable manifest (path defaults to $SCALABLE_MANIFEST, then
        ./scalable.yaml); `target` names one of its targets."""
        manifest = Manifest.load(path)
        return cls(target=target, manifest=manifest, **kwargs)

    @classmethod
    def attach(
        cls,
        client,
        *,
        project: str | None = None,
        runs_dir: str | os.PathLike | None = None,
        tracer_provider=None,
        meter_provider=None,
        **kwargs,
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
        address is the run's target), and ends at `close()` (or the end of the `with`),
        which takes the session's plugins off the scheduler and workers and finishes
        run.json, but never closes the client or its cluster.

        `tracer_provider`: an SDK `TracerProvider` whose span processors also receive the
        run's spans (same trace and span ids as the run directory). `meter_provider`: the
        run's metrics are also recorded on a meter of it (scope `scalable_otel`); this keeps
        the run's recorder in a thread of this process. Other keywords are those of
        `ScalableSession` (`cache_dir`, `flush_interval`, `otlp_endpoint`, ...).
        """
        from .instrumentation.scheduler_plugin import TaskRecordPlugin

        processors = list(kwargs.pop("span_processors", ()))
        if tracer_provider is not None:
            from .instrumentation.instrumentor import forward_spans_to

            forward = forward_spans_to(tracer_provider)
            if forward is not None:
                processors.append(forward)
        if meter_provider is not None:
            kwargs["recorder"] = "thread"  # the mirrored instruments live in this process
        address = client.scheduler.address
        session = cls(
            address, project=project, runs_dir=runs_dir, span_processors=processors, **kwargs
        )
        session._attached = True
        session.client = client
        session._started = time.time()
        # the scheduler may be in another process (or a copy of the plugin is made when it
        # is registered): its records come back through the client, as for a remote target
        plugin = TaskRecordPlugin(forward=True)
        if telemetry_disabled() or not session._open_telemetry(plugin):
            return session
        mirror = None
        if meter_provider is not None:
            from .instrumentation.instrumentor import mirror_metrics

            mirror = functools.partial(mirror_metrics, session, meter_provider)
        session._attach_telemetry(plugin, remote=True, before=mirror)
        return session

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> ScalableSession:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(status=_exit_status(exc_type))

    def start(self) -> ScalableSession:
        """Open the run directory and the OTel pipeline, then start or connect to Dask."""
        if self._attached:  # attach() started the run on the caller's client
            return self
        from distributed import Client

        from .instrumentation.scheduler_plugin import TaskRecordPlugin

        self._started = time.time()
        remote = self.target.startswith(_ADDRESS_PREFIXES)
        plugin = TaskRecordPlugin(forward=remote)
        telemetry = not telemetry_disabled() and self._open_telemetry(plugin)
        try:
            if remote:
                self.client = Client(self.target)
            else:
                self.cluster = self._start_cluster([plugin] if telemetry else [])
                self.client = Client(self.cluster)
        except BaseException as exc:
            if telemetry:  # the run ends before it began: say so in run.json
                self._finish_telemetry(_exit_status(type(exc)))
                TERMINATION.end_close(self, counted=False)
            raise
        if telemetry:
            self._attach_telemetry(plugin, remote)
        return self

    def _attach_telemetry(self, plugin, remote: bool, before=None) -> None:
        """Put the plugins on the client's cluster and wait for the recorder (after
        `before`, if given); never raises."""
        try:
            if before is not None:
                before()
            self._instrument_client(plugin, remote)
            if not self._recording.wait_ready():
                logger.warning("scalable-otel: the telemetry process did not start")
        except Exception as exc:
            logger.warning(
                "scalable-otel: telemetry not attached to Dask (%s); the workflow goes on", exc
            )

    def _start_cluster(self, plugins):
        if self.provider == "slurm":
            from .clusters import slurm_cluster

            return slurm_cluster(self.settings, self.n_workers, plugins, self._cluster_kwargs)
        return self._local_cluster(plugins)

    def _local_cluster(self, plugins):
        from distributed import LocalCluster

        kwargs = {"processes": True, "dashboard_address": None}
        if self.n_workers is not None:
            kwargs["n_workers"] = int(self.n_workers)
        if self.threads_per_worker is not None:
            kwargs["threads_per_worker"] = int(self.threads_per_worker)
        if self.memory_limit is not None:
            kwargs["memory_limit"] = self.memory_limit
        kwargs.update(self._cluster_kwargs)
        scheduler_kwargs = dict(kwargs.pop("scheduler_kwargs", {}) or {})
        scheduler_kwargs["plugins"] = list(scheduler_kwargs.get("plugins", [])) + plugins
        return LocalCluster(scheduler_kwargs=scheduler_kwargs, **kwargs)

    def _open_telemetry(self, plugin) -> bool:
        """Create the run directory and the pipeline; on failure warn once and run without."""
        try:
            self.run_id = new_run_id(self.project)
            self._rundir = RunDirectory.create(runs_dir(self.runs_root).absolute(), self.run_id)
            self.run_dir = self._rundir.path
            self._write_run_json("running")
            manifest_path = self.run_dir / "manifest.yaml"
            manifest_path.touch(mode=0o600)
            manifest_path.write_text(self._manifest().to_yaml())
            write_json_atomic(self.run_dir / PLAN_JSON, self._plan(graph=None))
            config = RunConfig(
                run_dir=str(self.run_dir),
                run_id=self.run_id,
                project=self.project,
                target=self.target,
                provider=self.provider,
                started=self._started,
                flush_interval=self.flush_interval,
                trace_id=self.trace_id,
                exports=self._exports.to_dict(),
                redact_values=self.redaction.value_patterns(),
            )
            processors = {
                "span_processors": self._span_processors,
                "metric_readers": self._metric_readers,
                "log_processors": self._log_processors,
            }
            if self.recorder == "process" and not any(processors.values()):
                try:
                    self._recording = ChildProcessRecording(config, plugin.records)
                except Exception as exc:  # no child process here: record in a thread instead
                    logger.info("scalable-otel: recording in a thread (%s)", exc)
            if self._recording is None:
                self._recording = InThreadRecording(config, plugin.records, **processors)
        except Exception as exc:
            logger.warning(
                "scalable-otel: telemetry is off for this run (%s); the workflow goes on", exc
            )
            self._recording = None
            return False
        TERMINATION.add(self)  # from now on a SIGTERM closes the run as interrupted
        return True

    def _instrument_client(self, plugin, remote: bool) -> None:
        from .instrumentation.worker_plugin import WorkerTelemetryPlugin

        inbox = self._recording.inbox
        if remote:

            def on_records(event):
                inbox.append(("forwarded", event[0], event[1]))

            self.client.subscribe_topic(sc.FORWARD_TOPIC, on_records)
            self.client.register_plugin(plugin, name=sc.SCHEDULER_PLUGIN_NAME)
        self.client.register_plugin(
            WorkerTelemetryPlugin(
                resource_interval=self.resource_interval,
                flush_interval=self.flush_interval,
                cache_dir=str(self.cache_dir),
                run_id=self.run_id,
                trace_id=self.trace_id,
            ),
            name=sc.WORKER_PLUGIN_NAME,
        )
        cache.set_driver_sink(lambda record: inbox.append(("cache", record)), str(self.cache_dir))

    def close(self, status: str | None = None) -> None:
        """Finish the run: flush workers, close Dask, end spans, write run.json.

        A session from `attach()` leaves the client and its cluster running."""
        counted = TERMINATION.begin_close()
        try:
            self._close(status)
        finally:
            TERMINATION.end_close(self, counted)

    def _close(self, status: str | None) -> None:
        recording = self._recording
        if recording is not None:
            try:
                self.client.run(_worker_flush)
                time.sleep(0.05)  # let the workers' batches reach the scheduler
                token = uuid.uuid4().hex
                self.client.run_on_scheduler(sync_scheduler_plugin, token=token)
                if not recording.sync(token):
                    logger.warning(
                        "scalable-otel: the last records from the scheduler did "
                        "not arrive in time; the run directory may miss them"
                    )
            except Exception:
                logger.debug("scalable-otel: final worker flush failed", exc_info=True)
            recording.mark_closing()
            cache.set_driver_sink(None, None)
        try:
            if self.cluster is None and recording is not None:
                self._detach_from_cluster()
            if self.client is not None and not self._attached:
                self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            if recording is not None:
                self._finish_telemetry(status)

    def _detach_from_cluster(self) -> None:
        """Leave a cluster we did not start as we found it: no plugins of ours behind."""
        try:
            self.client.unsubscribe_topic(sc.FORWARD_TOPIC)
            self.client.unregister_worker_plugin(sc.WORKER_PLUGIN_NAME)
            self.client.unregister_scheduler_plugin(sc.SCHEDULER_PLUGIN_NAME)
        except Exception:
            logger.debug("scalable-otel: plugins not unregistered", exc_info=True)

    def _finish_telemetry(self, status: str | None) -> None:
        ended = time.time()
        if status is None and self._terminated:
            status = "interrupted"
        summary = self._recording.close(ended, status)
        self._recording = None
        if summary is None:
            logger.warning(
                "scalable-otel: the telemetry process did not report its end; "
                "run.json has no task counts"
            )
            # the workflow's own outcome is known; its task counts are not
            summary = {"status": status or "completed", "telemetry_lost": True}
        self.status = summary["status"]
        try:
            write_json_atomic(self.run_dir / PLAN_JSON, self._plan(graph=self._graph()))
        except Exception:
            logger.debug("scalable-otel: plan.json not rewritten", exc_info=True)
        try:
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
        try:
            from .analysis.columns import write_columnar_copy

            write_columnar_copy(self.run_dir)
        except Exception:
            logger.debug("scalable-otel: no columnar copy of the run", exc_info=True)

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

    def _write_run_json(self, status: str, ended=None, summary: dict | None = None) -> None:
        from . import __version__

        data = run_json(
            run_id=self.run_id,
            project=self.project,
            status=status,
            started=self._started,
            ended=ended,
            target=self.target,
            provider=self.provider,
            host=socket.gethostname(),
            pid=os.getpid(),
            process_start_time=_PROCESS_START_TIME,
            manifest_hash=self._manifest().hash,
            trace_id=self.trace_id,
            exporters=self._exports.describe(),
            settings={
                "n_workers": self.n_workers,
                "threads_per_worker": self.threads_per_worker,
                "resource_interval_s": self.resource_interval,
                "flush_interval_s": self.flush_interval,
            },
            versions=_versions(__version__),
            summary=summary,
        )
        self._rundir.write_run_json(data)

    def _plan(self, graph: list | None) -> dict:
        manifest = self._manifest()
        tasks = {name: manifest.task_resources(name) for name in (manifest.data.get("tasks") or {})}
        plan = {
            "schema_version": sc.SCHEMA_VERSION,
            "run_id": self.run_id,
            "target": self.target,
            "provider": self.provider,
            "manifest_hash": manifest.hash,
            "tasks": tasks,
        }
        if graph is not None:
            plan["graph"] = graph
        return plan

    def _graph(self) -> list:
        """The submitted task graph, read back from tasks.jsonl (nothing kept in memory);
        a task carries its `component` and requested `resources`: the component it was
        submitted with (the Scalable tool's `tag=`), else the one the manifest gives its name."""
        manifest = self._manifest()
        requests = manifest.task_requests()
        graph = []
        # the writer's own lines: compact JSON, so the event's bytes are known
        submitted = f'"event":"{sc.TASK_SUBMITTED}"'.encode()
        for e in iter_lines(self.run_dir / TASKS, containing=submitted):
            if e is None or e.get("event") != sc.TASK_SUBMITTED:
                continue
            entry = {
                "key": e.get("key"),
                "task": e.get("task"),
                "dependencies": e.get("dependencies", []),
            }
            if e.get("component"):
                entry.update(manifest.component_request(e["component"]))
            else:
                entry.update(requests.get(e.get("task"), {}))
            graph.append(entry)
        return graph

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
