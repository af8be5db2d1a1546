"""DaskInstrumentor: every `distributed.Client` records a run, with no change to user code.

The OpenTelemetry instrumentation of Dask, in the pattern of opentelemetry-python-contrib::

    from distributed import Client
    from scalable_otel.instrumentor import DaskInstrumentor

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

Asynchronous clients record the same run, files, spans and metrics::

    async with Client(address, asynchronous=True) as client:  # or: await Client(...)
        await client.gather(client.map(run_simulation, range(100)))
    # or: await client.close()

Their connection is the coroutine `Client._start` (what `await client` and `async with`
await): it is wrapped to attach the run, awaited, once the client is connected. Their
`close()`, `shutdown()` and `__aexit__` return coroutines: the wrappers return ones that
finish the run first (`__aexit__` with the status of the exception leaving the block),
and `Client._close`, which Dask's own test clusters await directly, is wrapped too. The
telemetry's blocking work runs in threads (`scalable_otel.async_session`): the event loop
never waits on it. An asynchronous client left open has its run finished by
`uninstrument()` or at exit, on its loop if that still runs in another thread, else
without reaching Dask (run.json and the spans end; the plugins stay, recording nothing).

Which clients record a run, each exactly once (a client is considered once, when it
is made, and a lookup of an existing client makes none):

- `Client(...)`, and every client Dask or a library makes through it on the user's
  behalf: `get_client(address)` or `Client()` (from `scheduler-address`) in the driver,
  a cluster object's `get_client()` (`LocalCluster`, dask-jobqueue's `SLURMCluster`...;
  a second call returns the same client), prefect-dask's `PrefectDaskClient`.
- `get_client()`, `default_client()`, `Client.current()`, `Client.as_current()` and
  `dask.config.set(scheduler=client)` find a client already made: no new run; what is
  computed through them (`dask.compute(...)`) is in the run of the client it went to.
- A client left open when its cluster object closes (`with LocalCluster() as cluster:
  client = cluster.get_client()`): `Cluster.close`, `__exit__` and `__aexit__` are
  wrapped to finish the runs of the cluster's clients first, while its workers can still
  be flushed (failed when the `with` ends on an exception).
- Not recorded: a client made before `instrument()` (`opentelemetry-instrument`
  instruments before any user code runs).

Left alone (no run): clients made inside a Dask task or by a worker (`get_client()`,
`worker_client()`: their tasks are in the run of the client that submitted the task),
and the client of a `ScalableSession` (it records its own run). Two clients on one
scheduler, in this process or anywhere else, record two runs, each with its own tasks
only.

JGCRI's Scalable tool: its `ScalableClient` is a `Client`, so it records a run like any
other; the `tag=` of its `submit` and `map` becomes each task's component, and its
`cacheable` lookups become cache.jsonl lines (see `scalable_library`).

A failure of the telemetry never reaches the client: one warning, and the client works.

Layering: this module sits above `session` (it makes a session for each client), the
instrumentation below it; a session marks the clients it makes itself
(`session.session_owns_client`) rather than being wrapped from here.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import threading
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap

from .instrumentation import scalable_library
from .termination import exit_status

logger = logging.getLogger(__name__)

__all__ = ["DaskInstrumentor"]

_instruments = ("distributed >= 2024.12",)

# instrument() keywords that are not ScalableSession's: the client decides these
_CLUSTER_ONLY = frozenset({"target", "n_workers", "threads_per_worker", "cluster", "asynchronous"})
_PROVIDER_KWARGS = frozenset({"tracer_provider", "meter_provider"})
_CLIENT_METHODS = ("__init__", "close", "__exit__", "shutdown", "__aexit__")
# private coroutines of an asynchronous client (compat.CLIENT_START, CLIENT_CLOSE)
_ASYNC_METHODS = ("_start", "_close")
# a Dask cluster object (LocalCluster, SLURMCluster...): its clients' runs end as it closes
_CLUSTER_METHODS = ("close", "__exit__", "__aexit__")
_ATTACH_ON_START = "_scalable_otel_attach_on_start"  # an asynchronous client to attach
_SEEN = "_scalable_otel_seen"  # on a client: considered once, attached at most once

_atexit_registered = False


class DaskInstrumentor(BaseInstrumentor):
    """Record a run for every `distributed.Client` created while instrumented.

    Example::

        from opentelemetry.sdk.trace import TracerProvider
        from scalable_otel.instrumentor import DaskInstrumentor

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

        self._options = _session_options(kwargs)
        self._live = {}
        wrapt.wrap_function_wrapper(Client, "__init__", self._client_created)
        wrapt.wrap_function_wrapper(Client, "close", self._client_closing)
        wrapt.wrap_function_wrapper(Client, "shutdown", self._client_closing)
        wrapt.wrap_function_wrapper(Client, "__exit__", self._client_exiting)
        wrapt.wrap_function_wrapper(Client, "__aexit__", self._client_aexiting)
        for name, wrapper in zip(_ASYNC_METHODS, (self._client_starting, self._client_ending)):
            if not inspect.iscoroutinefunction(inspect.unwrap(getattr(Client, name, None))):
                from . import compat

                fell_back = compat.CLIENT_START if name == "_start" else compat.CLIENT_CLOSE
                compat.fell_back(fell_back, AttributeError(f"Client.{name}"))
                continue
            wrapt.wrap_function_wrapper(Client, name, wrapper)
        from distributed.deploy.cluster import Cluster

        wrapt.wrap_function_wrapper(Cluster, "close", self._cluster_closing)
        wrapt.wrap_function_wrapper(Cluster, "__exit__", self._cluster_exiting)
        wrapt.wrap_function_wrapper(Cluster, "__aexit__", self._cluster_aexiting)
        scalable_library.instrument_client(self._session_of)
        from .session import keep_spare_recorders

        keep_spare_recorders(self._options)  # many clients: their telemetry starts ahead
        if not _atexit_registered:
            # before Dask's own exit hook (atexit runs last-registered first): a client
            # never closed still finishes its run while it can reach its workers
            atexit.register(_finish_runs_at_exit)
            _atexit_registered = True

    def _uninstrument(self, **kwargs: Any) -> None:
        from distributed import Client
        from distributed.deploy.cluster import Cluster

        for name in (*_CLIENT_METHODS, *_ASYNC_METHODS):
            unwrap(Client, name)
        for name in _CLUSTER_METHODS:
            unwrap(Cluster, name)
        scalable_library.uninstrument_client()
        self.finish_runs()
        scalable_library.stop_recording_cache_lookups()
        from .session import keep_spare_recorders

        keep_spare_recorders(None)

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
        from .session import session_owns_client

        if session_owns_client.get():
            setattr(client, _SEEN, True)
            return
        try:
            if client.asynchronous:  # attached once connected: see _client_starting
                setattr(client, _ATTACH_ON_START, True)
            else:
                self._attach(client)
        except Exception as exc:
            logger.warning(
                "scalable-otel: no run recorded for this Dask client (%s); the client "
                "works as usual",
                exc,
            )

    def _client_starting(self, wrapped, client, args, kwargs):
        connecting = wrapped(*args, **kwargs)

        async def connect_then_attach():
            connected = await connecting
            # set by __init__ after this coroutine was made (a synchronous client's
            # connection runs inside its __init__, before)
            if getattr(client, _ATTACH_ON_START, False):
                try:
                    await self._attach_async(client)
                except Exception as exc:
                    logger.warning(
                        "scalable-otel: no run recorded for this Dask client (%s); the "
                        "client works as usual",
                        exc,
                    )
            return connected

        return connect_then_attach()

    def _client_closing(self, wrapped, client, args, kwargs):
        return self._finish_then(wrapped, client, args, kwargs, None)

    def _client_exiting(self, wrapped, client, args, kwargs):
        exc_type = args[0] if args else kwargs.get("exc_type")
        self._finish(client, exit_status(exc_type))
        return wrapped(*args, **kwargs)

    def _client_aexiting(self, wrapped, client, args, kwargs):
        exc_type = args[0] if args else kwargs.get("exc_type")
        return self._finish_then(wrapped, client, args, kwargs, exit_status(exc_type))

    def _client_ending(self, wrapped, client, args, kwargs):
        async def finish_then_close():  # Client._close: always awaited on the loop
            await self._finish_async(client, None)
            return await wrapped(*args, **kwargs)

        return finish_then_close()

    def _finish_then(self, wrapped, client, args, kwargs, status):
        """Finish the client's run, then call `wrapped` (close, shutdown, __aexit__): on
        an asynchronous client's loop that is a coroutine, as what it wraps returns."""
        session = self._live_session(client)
        # an asynchronous client's close called from another thread than its loop's
        # returns no coroutine: the run is finished on the loop while this thread waits
        if session is None or not session.asynchronous or not client.asynchronous:
            self._finish(client, status)
            return wrapped(*args, **kwargs)

        async def finish_then_call():
            await self._finish_async(client, status)
            result = wrapped(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return finish_then_call()

    def _cluster_closing(self, wrapped, cluster, args, kwargs):
        return self._finish_clients_then(wrapped, cluster, args, kwargs, None)

    def _cluster_exiting(self, wrapped, cluster, args, kwargs):
        exc_type = args[0] if args else kwargs.get("exc_type")
        return self._finish_clients_then(wrapped, cluster, args, kwargs, exit_status(exc_type))

    def _cluster_aexiting(self, wrapped, cluster, args, kwargs):
        exc_type = args[0] if args else kwargs.get("exc_type")
        return self._finish_clients_then(wrapped, cluster, args, kwargs, exit_status(exc_type))

    def _finish_clients_then(self, wrapped, cluster, args, kwargs, status):
        """Finish the runs of the clients of `cluster` still open (`cluster.get_client()`
        left to the cluster's `with`), while its workers can be flushed; then close it."""
        clients = self._clients_of(cluster)
        if not getattr(cluster, "asynchronous", False):
            for client in clients:
                self._finish(client, status)
            return wrapped(*args, **kwargs)

        async def finish_then_close():
            # on the cluster's loop: only runs finished on it (a synchronous client's
            # would wait for that loop; it ends at its own close or at exit)
            for client in clients:
                await self._finish_async(client, status)
            result = wrapped(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return finish_then_close()

    def _clients_of(self, cluster) -> list:
        """The clients with a run going on that were made for `cluster` or connect to its
        scheduler."""
        try:
            address = cluster.scheduler_address
        except Exception:  # a cluster that never started
            address = None
        with self._lock:
            entries = list(self._live.values())
        return [
            client
            for client, session in entries
            if not isinstance(session, _Reserved)
            and (
                getattr(client, "cluster", None) is cluster
                or (address and getattr(client.scheduler, "address", None) == address)
            )
        ]

    # --- runs -------------------------------------------------------------------------------
    def _reserve(self, client) -> bool:
        """Whether `client` is to get a run: considered once, then reserved while its run
        is attached."""
        if getattr(client, _SEEN, False):
            return False
        setattr(client, _SEEN, True)
        if _inside_dask(client) or client.status != "running":
            return False
        with self._lock:
            self._live[id(client)] = (client, _Reserved(client.scheduler.address))
        return True

    def _reserved(self, client, session) -> None:
        with self._lock:
            if session is not None and session.run_dir is not None:
                self._live[id(client)] = (client, session)
            else:  # telemetry off, or it failed (attach said so): nothing to finish
                self._live.pop(id(client), None)

    def _attach(self, client) -> None:
        if not self._reserve(client):
            return
        from .session import ScalableSession

        session = None
        try:
            session = ScalableSession.attach(client, **self._options)
        finally:
            self._reserved(client, session)

    async def _attach_async(self, client) -> None:
        if not self._reserve(client):
            return
        from .session import ScalableSession

        session = None
        try:
            # the client is asynchronous: so is its session, started when awaited
            session = await ScalableSession.attach(client, **self._options)
        finally:
            self._reserved(client, session)

    def _live_session(self, client):
        """The session recording `client`'s run (None: none, or still being attached)."""
        entry = self._live.get(id(client))
        if entry is None or entry[0] is not client or isinstance(entry[1], _Reserved):
            return None
        return entry[1]

    def _take(self, client):
        """The session recording `client`'s run, no longer live; None if there is none."""
        with self._lock:
            entry = self._live.get(id(client))
            if entry is None or entry[0] is not client or isinstance(entry[1], _Reserved):
                return None
            del self._live[id(client)]
        return entry[1]

    async def _finish_async(self, client, status: str | None) -> None:
        """Finish the run of an asynchronous client, on its loop."""
        session = self._live_session(client)
        if session is None or not session.asynchronous:
            return
        session = self._take(client)
        if session is None:
            return
        try:
            await session.close(status=status)
        except Exception as exc:
            logger.warning(
                "scalable-otel: the run of a Dask client did not finish cleanly (%s); the "
                "client goes on",
                exc,
            )

    def _finish(self, client, status: str | None) -> None:
        session = self._take(client)
        if session is None:
            return
        try:
            if session.asynchronous:
                from .async_session import finish_off_loop

                finish_off_loop(session, status)
            else:
                session.close(status=status)
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


def _inside_dask(client) -> bool:
    """A client made in a task (`get_client()`, `worker_client()`) or by a worker."""
    from distributed.worker import get_worker

    try:
        get_worker()
        return True
    except ValueError:
        pass
    # Worker._get_client names its client "worker" (the id is "Client-worker-<uuid>"):
    # compat.WORKER_CLIENT_ID, checked by tests/test_canaries.py
    return str(getattr(client, "id", "")).startswith(f"{type(client).__name__}-worker-")


def _finish_runs_at_exit() -> None:
    instrumentor = DaskInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.finish_runs()


def _session_options(kwargs: dict) -> dict:
    """The keywords of `instrument()` that `ScalableSession.attach` takes; a keyword that
    moved into an option object raises TypeError naming it, others are warned of."""

    from .options import MOVED_KEYWORDS, moved_keyword_error
    from .session import ScalableSession

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
