"""DaskInstrumentor: every `distributed.Client` records a run, with no change to user code.

The OpenTelemetry instrumentation of Dask, in the pattern of opentelemetry-python-contrib::

    from distributed import Client
    from scalable_otel.instrumentation.instrumentor import DaskInstrumentor

    DaskInstrumentor().instrument(project="demeter")
    with Client("tcp://scheduler:8786") as client:  # a run directory opens here
        client.gather(client.map(run_simulation, range(100)))
    # ... and is finished here (run.json "completed")

It is also registered as the `dask` entry point of `opentelemetry_instrumentor`, so that
`opentelemetry-instrument python app.py` turns it on without any import.

How it attaches: `Client.__init__` is wrapped; once a synchronous client is connected it
gets a run through `ScalableSession.attach`, which puts the scheduler and worker plugins
on the client's cluster (records come back through the client's event topic, wherever the
scheduler runs). `Client.close`, `Client.__exit__` and `Client.shutdown` are wrapped to
finish the run first, while the client can still flush its workers: plugins come off, the
run's spans end and run.json gets its status. The cluster is never touched otherwise.

Left alone (no run): clients made inside a Dask task or by a worker (`get_client()`,
`worker_client()`: their tasks are in the run of the client that submitted the task),
`asynchronous=True` clients (their connection and closing are coroutines this wrapper
does not await), the client of a `ScalableSession` (it records its own run), and a second
client of this process to a scheduler already being recorded (its tasks are in that run:
the scheduler plugin sees every task of the scheduler).

JGCRI's Scalable tool: its `ScalableClient` is a `Client`, so it records a run like any
other; the `tag=` of its `submit` and `map` becomes each task's component, and its
`cacheable` lookups become cache.jsonl lines (see `scalable_library`).

A failure of the telemetry never reaches the client: one warning, and the client works.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import logging
import threading
import weakref
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import Observation
from opentelemetry.sdk.trace import SpanProcessor

from .. import semconv as sc
from . import scalable_library

logger = logging.getLogger(__name__)

__all__ = ["DaskInstrumentor"]

_instruments = ("distributed >= 2024.12",)

# instrument() keywords that are not ScalableSession's: the client decides these
_CLUSTER_ONLY = frozenset({"target", "n_workers", "threads_per_worker", "cluster"})
_PROVIDER_KWARGS = frozenset({"tracer_provider", "meter_provider"})
_CLIENT_METHODS = ("__init__", "close", "__exit__", "shutdown")
_SEEN = "_scalable_otel_seen"  # on a client: considered once, attached at most once

# True while a ScalableSession creates its own client: that session records the run
_session_owns_client: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "scalable_otel_session_owns_client", default=False
)
_atexit_registered = False


class DaskInstrumentor(BaseInstrumentor):
    """Record a run for every `distributed.Client` created while instrumented.

    Example::

        from opentelemetry.sdk.trace import TracerProvider
        from scalable_otel.instrumentation.instrumentor import DaskInstrumentor

        provider = TracerProvider()  # with your own span processors
        DaskInstrumentor().instrument(runs_dir="runs", tracer_provider=provider)
        ...  # any Client() made now records a run, finished when it closes
        DaskInstrumentor().uninstrument()  # finishes open runs; new clients record nothing

    Keywords of `instrument()`:

    - `runs_dir`, `project`, `manifest`, `cache_dir` and the option objects of
      `ScalableSession` that do not pick a cluster: `exports=ExportOptions(...)`,
      `redaction=Redaction(...)`, `pipeline=PipelineOptions(...)`,
      `recording=RecordingOptions(...)` (as `ScalableSession.attach`). Unset, they
      come from the environment as for a session: $SCALABLE_RUNS_DIR,
      `OTEL_EXPORTER_OTLP_*`, `OTEL_TRACES_EXPORTER`, `OTEL_SDK_DISABLED`... A keyword
      that moved into an option object (`otlp_endpoint=`, `flush_interval=`...) raises a
      TypeError naming it; other unknown keywords (`n_workers`: the client decides) are
      ignored with a warning.
    - `tracer_provider`: an SDK `TracerProvider` whose span processors also receive every
      span of every run (the same spans, ids and trace as the run directory, with the
      run's resource). The spans are made by the run's own pipeline, whose id generator
      gives task spans ids that workers derive from task keys, so they are handed to the
      provider's processors rather than made by its tracers.
    - `meter_provider`: a `MeterProvider` on which the run's metrics (same names, units
      and attributes) are also recorded, on a meter named `scalable_otel`: histograms
      and gauges as they are measured, task and cache counters summed over this
      process's runs, the connected-workers count over the runs still going. The run's
      recorder then works in a thread of this process.

    Neither provider defaults to the global one: the run's own pipeline already sends
    spans and metrics where the `OTEL_*` variables say (as `opentelemetry-instrument`
    configures the global providers from the same variables, defaulting to them would
    send every span twice).
    """

    _lock = threading.Lock()
    _options: dict = {}
    _live: dict = {}  # id(client) -> (client, session) of the runs going on

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        global _atexit_registered
        from distributed import Client

        from ..session import ScalableSession

        self._options = _session_options(kwargs)
        self._live = {}
        wrapt.wrap_function_wrapper(Client, "__init__", self._client_created)
        wrapt.wrap_function_wrapper(Client, "close", self._client_closing)
        wrapt.wrap_function_wrapper(Client, "shutdown", self._client_closing)
        wrapt.wrap_function_wrapper(Client, "__exit__", self._client_exiting)
        wrapt.wrap_function_wrapper(ScalableSession, "start", _session_start)
        scalable_library.instrument_client(self._session_of)
        if not _atexit_registered:
            # before Dask's own exit hook (atexit runs last-registered first): a client
            # never closed still finishes its run while it can reach its workers
            atexit.register(_finish_runs_at_exit)
            _atexit_registered = True

    def _uninstrument(self, **kwargs: Any) -> None:
        from distributed import Client

        from ..session import ScalableSession

        for name in _CLIENT_METHODS:
            unwrap(Client, name)
        unwrap(ScalableSession, "start")
        scalable_library.uninstrument_client()
        self.finish_runs()
        scalable_library.stop_recording_cache_lookups()

    def finish_runs(self, status: str | None = None) -> None:
        """Finish the run of every instrumented client still open; the clients go on."""
        with self._lock:
            clients = [client for client, _ in self._live.values()]
        for client in clients:
            self._finish(client, status)

    def _session_of(self, client):
        """The session recording `client`'s run, or None."""
        entry = self._live.get(id(client))
        if entry is None or entry[0] is not client or isinstance(entry[1], _Reserved):
            return None
        return entry[1] if entry[1]._recording is not None else None

    # --- the wrappers ---------------------------------------------------------------------
    def _client_created(self, wrapped, client, args, kwargs):
        wrapped(*args, **kwargs)
        if not _session_owns_client.get():
            try:
                self._attach(client)
            except Exception as exc:
                logger.warning(
                    "scalable-otel: no run recorded for this Dask client (%s); the client "
                    "works as usual",
                    exc,
                )

    def _client_closing(self, wrapped, client, args, kwargs):
        self._finish(client, None)
        return wrapped(*args, **kwargs)

    def _client_exiting(self, wrapped, client, args, kwargs):
        exc_type = args[0] if args else kwargs.get("exc_type")
        status = None
        if exc_type is not None:
            interrupted = issubclass(exc_type, (KeyboardInterrupt, SystemExit))
            status = "interrupted" if interrupted else "failed"
        self._finish(client, status)
        return wrapped(*args, **kwargs)

    # --- runs -------------------------------------------------------------------------------
    def _attach(self, client) -> None:
        if getattr(client, _SEEN, False):
            return
        setattr(client, _SEEN, True)
        if _inside_dask(client) or getattr(client, "_asynchronous", False):
            return
        if client.asynchronous or client.status != "running":
            return
        from ..session import ScalableSession

        address = client.scheduler.address
        with self._lock:
            if any(s.target == address for _, s in self._live.values()):
                logger.info(
                    "scalable-otel: %s is already recorded by another client's run", address
                )
                return
            # reserved now, so that two clients made at once cannot both attach
            self._live[id(client)] = (client, _Reserved(address))
        session = None
        try:
            session = ScalableSession.attach(client, **self._options)
        finally:
            with self._lock:
                if session is not None and session.run_dir is not None:
                    self._live[id(client)] = (client, session)
                else:  # telemetry off, or it failed (attach said so): nothing to finish
                    self._live.pop(id(client), None)

    def _finish(self, client, status: str | None) -> None:
        with self._lock:
            entry = self._live.get(id(client))
            if entry is None or entry[0] is not client or isinstance(entry[1], _Reserved):
                return
            del self._live[id(client)]
        try:
            entry[1].close(status=status)
        except Exception as exc:
            logger.warning(
                "scalable-otel: the run of a Dask client did not finish cleanly (%s); the "
                "client goes on",
                exc,
            )


class _Reserved:
    """A run being attached: holds its scheduler's address until the session exists."""

    def __init__(self, target: str):
        self.target = target


def _session_start(wrapped, session, args, kwargs):
    token = _session_owns_client.set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _session_owns_client.reset(token)


def _inside_dask(client) -> bool:
    """A client made in a task (`get_client()`, `worker_client()`) or by a worker."""
    from distributed.worker import get_worker

    try:
        get_worker()
        return True
    except ValueError:
        pass
    # Worker._get_client names its client "worker" (the id is "Client-worker-<uuid>")
    return str(getattr(client, "id", "")).startswith(f"{type(client).__name__}-worker-")


def _finish_runs_at_exit() -> None:
    instrumentor = DaskInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.finish_runs()


def _session_options(kwargs: dict) -> dict:
    """The keywords of `instrument()` that `ScalableSession.attach` takes; a keyword that
    moved into an option object raises TypeError naming it, others are warned of."""
    import inspect

    from ..options import MOVED_KEYWORDS, moved_keyword_error
    from ..session import ScalableSession

    for name in kwargs:
        if name in MOVED_KEYWORDS:
            raise moved_keyword_error("DaskInstrumentor.instrument", name)
    parameters = inspect.signature(ScalableSession.__init__).parameters.values()
    accepted = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    accepted = (accepted - _CLUSTER_ONLY) | _PROVIDER_KWARGS
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        logger.warning("scalable-otel: DaskInstrumentor ignores %s", ", ".join(unknown))
    return {name: value for name, value in kwargs.items() if name in accepted}


# --- tracer_provider: the run's spans to another provider's processors --------------------
class _ForwardingSpanProcessor(SpanProcessor):
    """On the run's provider: hands each span to another provider's span processors."""

    def __init__(self, target):
        self._target = target

    def on_start(self, span, parent_context=None) -> None:
        try:
            self._target.on_start(span, parent_context=parent_context)
        except Exception:
            logger.debug("scalable-otel: a forwarded span processor failed", exc_info=True)

    def on_end(self, span) -> None:
        try:
            self._target.on_end(span)
        except Exception:
            logger.debug("scalable-otel: a forwarded span processor failed", exc_info=True)

    def shutdown(self) -> None:
        # the run ends, not the provider: its exporters get the run's last spans and go on
        self.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self._target.force_flush(timeout_millis)
        except Exception:
            logger.debug("scalable-otel: a forwarded span processor failed", exc_info=True)
            return False


def forward_spans_to(tracer_provider) -> SpanProcessor | None:
    """A span processor for a run's pipeline that passes every span to the span processors
    of `tracer_provider` (an SDK `TracerProvider`); None, with a warning, for another kind.

    Example::

        processor = forward_spans_to(my_tracer_provider)
        ScalableSession(pipeline=PipelineOptions(span_processors=[processor]))
    """
    # The SDK has no public accessor for a provider's processors; this attribute has held
    # them (a multi-span processor, which add_span_processor extends) since SDK 1.0.
    target = getattr(tracer_provider, "_active_span_processor", None)
    if target is None:
        logger.warning(
            "scalable-otel: tracer_provider %s is not an OpenTelemetry SDK TracerProvider; "
            "the run's spans go to the run directory and the configured exporters only",
            type(tracer_provider).__name__,
        )
        return None
    return _ForwardingSpanProcessor(target)


# --- meter_provider: the run's metrics on another provider's instruments -------------------
class _Tee:
    """A synchronous instrument standing for two: each measurement goes to both."""

    def __init__(self, own, mirror):
        self._own = own
        self._mirror = mirror

    def __getattr__(self, method):
        own, mirror = getattr(self._own, method), getattr(self._mirror, method)

        def measure(*args, **kwargs):
            own(*args, **kwargs)
            try:
                mirror(*args, **kwargs)
            except Exception:
                logger.debug("scalable-otel: a mirrored instrument failed", exc_info=True)

        return measure


class _MetricMirror:
    """The run metrics of this process's runs, on the instruments of one meter.

    An SDK meter keeps the callbacks of an observable instrument's first creation only,
    so each observable instrument is created once here and observes every run: a counter
    reports its runs' sum (the final counts of finished runs kept, so it only grows),
    other observables report the runs still going.
    """

    def __init__(self, meter):
        self._meter = meter
        self._lock = threading.Lock()
        self._instruments: dict = {}  # (method, name) -> instrument
        self._sources: dict = {}  # name -> [(session, callback)]
        self._finished: dict = {}  # name -> {attributes: value} of finished runs (counters)

    def instrument(self, method: str, name: str, args, kwargs):
        with self._lock:
            if (method, name) not in self._instruments:
                create = getattr(self._meter, method)
                self._instruments[method, name] = create(name, *args, **kwargs)
            return self._instruments[method, name]

    def observe(self, method: str, session, name: str, callbacks=None, **kwargs):
        with self._lock:
            self._sources.setdefault(name, []).extend((session, cb) for cb in callbacks or ())
        keep_finished = method == "create_observable_counter"
        callback = functools.partial(self._observe, name, keep_finished)
        return self.instrument(method, name, ([callback],), kwargs)

    def _observe(self, name: str, keep_finished: bool, options):
        with self._lock:
            finished = self._finished.setdefault(name, {})
            totals = dict(finished)
            going = []
            for session, callback in self._sources.get(name, ()):
                done = session._recording is None  # checked first: then these values are final
                values = [
                    (frozenset((o.attributes or {}).items()), o.value) for o in callback(options)
                ]
                if not done:
                    going.append((session, callback))
                elif not keep_finished:
                    continue  # a finished run has no workers connected
                for key, value in values:
                    totals[key] = totals.get(key, 0) + value
                    if done:
                        finished[key] = finished.get(key, 0) + value
            self._sources[name] = going
        return [Observation(value, dict(key)) for key, value in totals.items()]


class _RunMeter:
    """What a run's recorder gets as its meter: the mirror's instruments, one run's
    callbacks."""

    def __init__(self, mirror: _MetricMirror, session):
        self._mirror = mirror
        self._session = session

    def __getattr__(self, method: str):
        if method.startswith("create_observable_"):
            return functools.partial(self._mirror.observe, method, self._session)
        if method.startswith("create_"):
            return lambda name, *args, **kwargs: self._mirror.instrument(method, name, args, kwargs)
        raise AttributeError(method)


_mirrors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_mirrors_lock = threading.Lock()


def mirror_metrics(session, meter_provider) -> None:
    """Record the metrics of `session`'s run (recorder in a thread) also on a meter of
    `meter_provider`; on failure warn and leave the run's own metrics as they are.

    Example::

        session = ScalableSession.attach(client, meter_provider=my_meter_provider)
    """
    from .. import __version__

    try:
        with _mirrors_lock:
            mirror = _mirrors.get(meter_provider)
            if mirror is None:
                meter = meter_provider.get_meter(sc.INSTRUMENTATION_SCOPE, __version__)
                mirror = _mirrors[meter_provider] = _MetricMirror(meter)
        recorder = session._recording._run.recorder
    except Exception as exc:
        logger.warning(
            "scalable-otel: the run's metrics are not mirrored to meter_provider (%s)", exc
        )
        return
    # The recorder defines its instruments once; made again on the mirror, each
    # synchronous one becomes a tee and each observable one is observed there too.
    own = dict(vars(recorder))
    try:
        recorder._make_instruments(_RunMeter(mirror, session))
        for name, value in list(vars(recorder).items()):
            if name in own and own[name] is not value:
                setattr(recorder, name, _Tee(own[name], value))
    except Exception as exc:
        for name, value in own.items():  # the run's own instruments, as they were
            setattr(recorder, name, value)
        logger.warning(
            "scalable-otel: the run's metrics are not mirrored to meter_provider (%s)", exc
        )
