"""Scheduler plugin: task transitions and worker changes, captured as small records.

Hooks run on the scheduler's event loop, so each does O(1) work: it appends a
tuple to a deque. A `lifecycle.Recorder` thread in the client's process drains
the deque and turns the records into spans and metrics. When the scheduler
runs in another process (a `tcp://` target) the plugin instead forwards its
records in batches to the client through Dask's event topics.

Records are plain tuples `(kind, t, *fields)`, t the scheduler's time in epoch s; each
kind this plugin makes and its fields are declared once, in `semconv.RECORDS` (the table
of docs/telemetry-schema.md, "Lifecycle records").

One scheduler may serve several runs (a notebook beside a script, two users of one
cluster): each run has its own plugin, named after its run id, and records only the
tasks its own clients asked for. Whether a task is the run's is decided once, when a
graph brings it (`update_graph`): its client is one of the run's, or one of the run's
clients already wants the key, or the graph comes from a worker's client while a task of
the run is running (a task submitting tasks: `get_client()`, `worker_client()`). A key
wanted by two runs belongs to both: the run that joins late gets its submission at once,
and its completion at once if the result is already there. Later transitions cost one
set lookup. The run's id is added to the task's annotations (`semconv.RUNS_ANNOTATION`),
which travel to the worker with the task, so that workers can give the task's usage and
spans to its runs. The mark is there only while the task may be sent to a worker (waiting,
queued or running): a finished task's annotations on the scheduler are the user's own,
and a task computed again is marked again. Workers, their resource samples and their
crashes are every run's.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import dask
from distributed.diagnostics.plugin import SchedulerPlugin

from .. import compat
from .. import semconv as sc
from ..queues import BoundedQueue
from .fine_metrics import FineMetrics

_READY_STATES = frozenset({"queued", "no-worker"})
_REQUEUE_STATES = frozenset({"released", "waiting"})
# A task's compute message copies its annotations when it is sent to a worker (Dask builds
# it before plugins see the transition, and again when a task is stolen): in these states
# the task carries the run's mark, in any other it does not.
_MARKED_STATES = frozenset({"released", "waiting", "queued", "no-worker", "processing"})
# processing -> memory | erred: the record's kind and the two transition kwargs it keeps
_OUTCOMES = {
    "memory": (sc.RECORD_DONE, "nbytes", "typename"),
    "erred": (sc.RECORD_ERROR, "exception_text", "traceback_text"),
}


def _killed_worker_text(key, worker) -> str:
    """What Dask's KilledWorker says, as exception text: the scheduler fails a task whose
    workers all died while running it with no exception text of the task's own."""
    return (
        f"KilledWorker('every worker that ran {key!r} died while running it; the last "
        f"was {worker}')"
    )


# The longest a close waits on the scheduler for the workers' last batches (each sent
# on its worker's batched stream when the close asked for it: milliseconds when healthy).
FINAL_BATCHES_WAIT_S = 1.0


def final_batches_wait(left: float) -> float:
    """How long the scheduler may wait for the workers' last batches, `left` seconds
    being what is left of the close's deadline."""
    return min(FINAL_BATCHES_WAIT_S, left / 4)


async def sync_scheduler_plugin(
    dask_scheduler,
    token: str,
    name: str = sc.SCHEDULER_PLUGIN_NAME,
    workers=(),
    timeout: float = 0.0,
) -> None:
    """Run on the scheduler (`Client.run_on_scheduler`): put a sync mark in the records
    of the plugin called `name` (a run's: `semconv.per_run`), once the batches the
    `workers` sent with this `token` (`worker_plugin.final_flush`) arrived, or `timeout`
    seconds passed, or those workers left."""
    plugin = dask_scheduler.plugins.get(name)
    if plugin is not None:
        await plugin.final_batches(token, workers, timeout)
        plugin.sync(token)


def task_group(ts) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The `distributed.span` block a task was submitted in: (its ids, its names), from
    the outermost span in, or None (no block: Dask's default span).

    Dask's spans extension leaves the annotation on the task for every span but its
    default one, before plugins see the graph. Raises for an annotation of another shape
    (`compat.SPAN_ANNOTATION` has moved).
    """
    annotations = getattr(ts, "annotations", None)
    span = annotations.get("span") if annotations else None
    if span is None:
        return None
    ids = tuple(str(i) for i in span["ids"])
    names = tuple(str(n) for n in span["name"])
    if not ids or len(ids) != len(names):
        raise ValueError(f"{len(ids)} span ids for {len(names)} names")
    return ids, names


def _startstop(kwargs) -> tuple[float | None, float | None]:
    for ss in kwargs.get("startstops") or ():
        if ss.get("action") == "compute":
            return ss["start"], ss["stop"]
    return None, None


def _is_worker_client(client) -> bool:
    """A worker's own client (`get_client()`, `worker_client()` in a task): its id is
    `<Class>-worker-<uuid>`."""
    parts = str(client).split("-", 2)
    return len(parts) == 3 and parts[1] == "worker"


def _bound_topic(scheduler, topic: str) -> bool:
    """Keep only a few of our batches in the scheduler's event log.

    The scheduler stores every event it publishes (100,000 per topic by
    default); our batches are consumed as they pass, and keeping them would
    make the client process grow with the length of the run. False where this Dask
    keeps its topics elsewhere: its default bound applies.
    """
    try:
        from distributed.broker import Topic

        topics = scheduler._broker._topics
        bounded = Topic(maxlen=4)
        if topic in topics:
            bounded.subscribers = topics[topic].subscribers
        topics[topic] = bounded
        return True
    except Exception as exc:
        compat.fell_back(compat.BROKER_TOPICS, exc)
        return False


class TaskRecordPlugin(SchedulerPlugin):
    """Captures lifecycle records on the scheduler. See the module docstring.

    `run_id`: the run whose plugin this is (its name, topics and task annotation say
    so); `clients`: the ids of the clients whose tasks are the run's (more are added with
    `record_client`). Without `clients` every task of the scheduler is recorded.
    """

    def __init__(
        self,
        forward: bool = False,
        forward_interval: float = 0.2,
        run_id: str | None = None,
        clients=None,
        worker_plugin: tuple[str, bytes] | None = None,
    ):
        self.forward = forward
        self.forward_interval = forward_interval
        self.run_id = run_id
        self._clients = set(clients) if clients is not None else None
        # (name, pickled plugin): the run's worker plugin, registered when this one starts
        self.worker_plugin = worker_plugin
        self._keys: set = set()  # the run's tasks that the scheduler still holds
        self._processing: set = set()  # the run's tasks on a worker now
        # bounded: if the run's telemetry process falls behind, records are dropped and
        # counted (run.json's telemetry_records_dropped), never piled up in the driver
        self.records: deque = BoundedQueue()
        self._scheduler = None
        self._ready: set = set()
        self._pc = None
        self._span_moved = False  # compat.SPAN_ANNOTATION fell back (counted once)
        self._fine = FineMetrics()
        self._fine_pc = None
        self._finals: dict = {}  # a close's token -> workers whose batch marked it came
        self._finals_seen = None  # set when one comes while the close waits for them
        # name -> extra worker facts (a batch system's job id and request); set by the
        # session on the plugin instance its in-process scheduler holds
        self.worker_details = None

    @property
    def name(self) -> str:
        return sc.per_run(sc.SCHEDULER_PLUGIN_NAME, self.run_id)

    @property
    def forward_topic(self) -> str:
        return sc.per_run(sc.FORWARD_TOPIC, self.run_id)

    @property
    def worker_topic(self) -> str:
        return sc.per_run(sc.WORKER_TOPIC, self.run_id)

    def record_client(self, client_id: str) -> None:
        """Record the tasks of this client too (thread-safe: one set insertion)."""
        if self._clients is None:
            self._clients = set()
        self._clients.add(client_id)

    def __getstate__(self):
        clients = sorted(self._clients) if self._clients is not None else None
        return {
            "forward": self.forward,
            "forward_interval": self.forward_interval,
            "run_id": self.run_id,
            "clients": clients,
            "worker_plugin": self.worker_plugin,
        }

    def __setstate__(self, state):
        self.__init__(**state)

    async def start(self, scheduler) -> None:
        self._scheduler = scheduler
        for topic in (self.worker_topic, self.forward_topic):
            if not _bound_topic(scheduler, topic):
                self.records.append((sc.RECORD_FALLBACK, time.time(), compat.BROKER_TOPICS))
                break
        now = time.time()
        for ws in list(scheduler.workers.values()):
            self._worker_added(scheduler, ws, now)
        from tornado.ioloop import PeriodicCallback

        self._fine.start(scheduler)
        self._fine_pc = PeriodicCallback(self.send_fine_metrics, sc.FINE_METRICS_INTERVAL_S * 1000)
        self._fine_pc.start()
        if self.forward:
            self._pc = PeriodicCallback(self._forward, self.forward_interval * 1000)
            self._pc.start()
        if self.worker_plugin is not None:
            try:
                await self._register_worker_plugin(scheduler, *self.worker_plugin)
            except BaseException:
                await self.close()  # Dask does not add a plugin whose start raised
                raise

    async def _register_worker_plugin(self, scheduler, name: str, plugin: bytes) -> None:
        """Register the run's worker plugin as `Client.register_plugin` would, raising a
        worker's error in setting it up, but leave no comm to a worker open after: Dask
        keeps a broadcast's comms for the next one (`reuse-broadcast-comm`), and a worker
        whose server stopped would still be reached through them, where a cluster with no
        run's plugins cannot reach it. Where Dask's handler moved, the client registers the
        plugin (`WorkerTelemetryPlugin.idempotent`: otherwise its call is a no-op)."""
        from distributed.core import clean_exception

        try:
            with dask.config.set({"distributed.scheduler.reuse-broadcast-comm": False}):
                responses = await scheduler.register_worker_plugin(
                    None, plugin, name, idempotent=False
                )
        except (AttributeError, TypeError) as exc:
            compat.fell_back(compat.WORKER_PLUGIN_HANDLER, exc)
            self.records.append((sc.RECORD_FALLBACK, time.time(), compat.WORKER_PLUGIN_HANDLER))
            return
        for response in responses.values():
            if response.get("status") == "error":
                _, exc, tb = clean_exception(response["exception"], response["traceback"])
                raise exc.with_traceback(tb)

    async def close(self) -> None:
        if self._fine_pc is not None:
            self._fine_pc.stop()
        if self._pc is not None:
            self._pc.stop()
            self._forward()

    async def final_batches(self, token: str, workers, timeout: float) -> None:
        """Wait until each of `workers` that is still connected sent its batch marked
        `token` (it travels on the worker's batched stream, behind the call that asked
        for it), `timeout` seconds at most."""
        waiting = set(workers)
        deadline = time.monotonic() + timeout
        self._finals_seen = asyncio.Event()
        try:
            while True:
                waiting -= self._finals.pop(token, set())
                if self._scheduler is not None:
                    waiting &= set(self._scheduler.workers)
                left = deadline - time.monotonic()
                if not waiting or left <= 0:
                    return
                self._finals_seen.clear()
                try:
                    await asyncio.wait_for(self._finals_seen.wait(), min(left, 0.1))
                except asyncio.TimeoutError:
                    pass  # a worker that left meanwhile is no longer waited for
        finally:
            self._finals.pop(token, None)
            self._finals_seen = None

    def sync(self, token: str) -> None:
        """Mark this point in the record stream; the recorder reports when it gets there.

        The fine performance metrics that changed go first: the session's last mark is
        preceded by the run's final figures."""
        self.send_fine_metrics()
        # past the queue's bound: the session waits for this mark
        deque.append(self.records, (sc.RECORD_SYNC, time.time(), token))
        if self.forward:
            self._forward()

    def send_fine_metrics(self) -> None:
        """Record Dask's fine performance metrics that changed since the last time."""
        if self._scheduler is None:
            return
        now = time.time()
        rows = self._fine.changed(self._scheduler)
        while self._fine.fallbacks:
            self.records.append((sc.RECORD_FALLBACK, now, self._fine.fallbacks.pop()))
        if rows:
            self.records.append((sc.RECORD_FINE_METRICS, now, rows))

    def _forward(self) -> None:
        if not self.records or self._scheduler is None:
            return
        batch = []
        while self.records:
            batch.append(self.records.popleft())
        self._scheduler.log_event(self.forward_topic, batch)

    # --- graph and transitions ----------------------------------------------------
    def update_graph(self, scheduler, *, client=None, tasks=(), **kwargs) -> None:
        clients = self._clients
        ours = (
            clients is None
            or client in clients
            or (bool(self._processing) and _is_worker_client(client))
        )
        now = time.time()
        keys = self._keys
        state = scheduler.tasks
        for key in tasks:
            if key in keys:  # a graph also touches tasks of the run it depends on
                continue
            ts = state.get(key)
            if ts is None or ts.run_spec is None:  # scattered data, not a task
                continue
            if not ours and not self._wanted_by_run(ts):
                continue
            keys.add(key)
            if self.run_id is not None:
                self._mark(ts, ts.state in _MARKED_STATES)
            self._joined(key, ts, now)

    def _wanted_by_run(self, ts) -> bool:
        clients = self._clients
        return any(cs.client_key in clients for cs in ts.who_wants or ())

    def _mark(self, ts, on: bool) -> None:
        """Put the run's id in the task's annotations, or take it out (the annotation goes
        with the run's last id: the task is left with the annotations it came with)."""
        annotations = ts.annotations or {}
        runs = annotations.get(sc.RUNS_ANNOTATION) or ()
        if (self.run_id in runs) == on:
            return
        # always a new dict: the scheduler may share one among the tasks of a graph, and a
        # compute message already built holds the old one
        rest = {k: v for k, v in annotations.items() if k != sc.RUNS_ANNOTATION}
        runs = (*runs, self.run_id) if on else tuple(r for r in runs if r != self.run_id)
        ts.annotations = {**rest, sc.RUNS_ANNOTATION: runs} if runs else rest

    def _joined(self, key, ts, now: float) -> None:
        """A task became the run's: its submission, and where it already is."""
        append = self.records.append
        deps = [d.key for d in ts.dependencies] if ts.dependencies else []
        try:
            group = task_group(ts)
        except Exception as exc:
            group = None
            if not self._span_moved:  # counted once: the run's tasks go on ungrouped
                self._span_moved = True
                compat.fell_back(compat.SPAN_ANNOTATION, exc)
                append((sc.RECORD_FALLBACK, now, compat.SPAN_ANNOTATION))
        append((sc.RECORD_SUBMIT, now, key, ts.prefix.name, deps, group))
        self._fine.joined(self._scheduler, ts)
        where = ts.state
        run_id = getattr(ts, "run_id", None)  # Dask's id of its current execution
        if where == "processing":  # another run's task, already sent to a worker
            self._ready.add(key)
            self._processing.add(key)
            worker = getattr(ts.processing_on, "address", None)
            append((sc.RECORD_PROCESSING, now, key, worker, run_id))
        elif where in _READY_STATES:  # another run's task, already on its way
            self._ready.add(key)
            append((sc.RECORD_READY, now, key))
        elif where == "memory":  # computed for another run: done at once, at no cost
            holder = next(iter(ts.who_has), None) if ts.who_has else None
            address = holder.address if holder is not None else None
            append((sc.RECORD_DONE, now, key, address, None, None, ts.nbytes, ts.type, run_id))
        elif where == "erred":
            blame = ts.exception_blame
            if blame is None or blame is ts:
                append(
                    (sc.RECORD_ERROR, now, key, None, None, None,
                     ts.exception_text, ts.traceback_text, run_id)
                )  # fmt: skip
            else:
                append((sc.RECORD_DEP_ERROR, now, key, blame.key, blame.prefix.name))

    def _task(self, key):
        """The scheduler's TaskState of `key`, or None."""
        return self._scheduler.tasks.get(key) if self._scheduler is not None else None

    def transition(self, key, start, finish, *args, stimulus_id=None, **kwargs) -> None:
        if self._clients is not None and key not in self._keys:
            return  # another run's task, or nobody's
        if self.run_id is not None and key in self._keys:
            ts = self._task(key)
            if ts is not None:
                self._mark(ts, finish in _MARKED_STATES)
        if finish == "processing":
            self._processing.add(key)
        if start == "processing":
            self._processing.discard(key)
            self._ready.discard(key)
            # Dask's id of the execution that ends here (a new one each time the task is
            # sent to a worker): the recorder tells a key's executions apart by it
            run_id = getattr(self._task(key), "run_id", None)
            outcome = _OUTCOMES.get(finish)
            if outcome is not None:
                kind, first, second = outcome
                t0, t1 = _startstop(kwargs)
                first_value = kwargs.get(first)
                if finish == "erred" and first_value is None and kwargs.get("cause") == key:
                    first_value = _killed_worker_text(key, kwargs.get("worker"))
                self.records.append(
                    (kind, time.time(), key, kwargs.get("worker"), t0, t1,
                     first_value, kwargs.get(second), run_id)
                )  # fmt: skip
            elif finish in _REQUEUE_STATES:
                self.records.append(
                    (sc.RECORD_REQUEUE, time.time(), key, finish, stimulus_id or "", run_id)
                )
            return
        if finish == "processing":
            # The start the scheduler knows: a worker killed before its plugin reported the
            # start still cost the task an attempt (Dask counts it toward allowed-failures).
            self._ready.add(key)
            ts = self._task(key)
            worker = getattr(getattr(ts, "processing_on", None), "address", None)
            self.records.append(
                (sc.RECORD_PROCESSING, time.time(), key, worker, getattr(ts, "run_id", None))
            )
            return
        if finish in _READY_STATES:
            if key not in self._ready:
                self._ready.add(key)
                self.records.append((sc.RECORD_READY, time.time(), key))
            return
        self._ready.discard(key)
        if finish == "erred":
            blame_key = blame_name = None
            if self._scheduler is not None:
                ts = self._scheduler.tasks.get(key)
                blame = ts.exception_blame if ts is not None else None
                if blame is not None:
                    blame_key, blame_name = blame.key, blame.prefix.name
            self.records.append((sc.RECORD_DEP_ERROR, time.time(), key, blame_key, blame_name))
        elif finish == "forgotten":
            self._keys.discard(key)
            self.records.append((sc.RECORD_FORGOTTEN, time.time(), key))

    # --- workers ----------------------------------------------------------------------
    def _worker_added(self, scheduler, ws, now) -> None:
        details = None
        if self.worker_details is not None:
            try:
                details = self.worker_details(str(ws.name))
            except Exception:  # never on the scheduler's loop
                details = None
        self.records.append(
            (
                sc.RECORD_WORKER_ADDED,
                now,
                ws.address,
                str(ws.name),
                ws.nthreads,
                ws.memory_limit,
                ws.host,
                getattr(ws, "pid", None),
                details,
            )
        )

    def add_worker(self, scheduler, worker) -> None:
        ws = scheduler.workers.get(worker)
        if ws is not None:
            self._worker_added(scheduler, ws, time.time())

    def remove_worker(self, scheduler, worker, **kwargs) -> None:
        pass  # recorded from the richer "remove-worker" event in log_event

    def log_event(self, topic, msg) -> None:
        if topic == self.worker_topic:
            self.records.append((sc.RECORD_WORKER_BATCH, time.time(), msg.get("worker"), msg))
            final = msg.get("final") if isinstance(msg, dict) else None
            if final:
                self._finals.setdefault(final, set()).add(msg.get("worker"))
                if self._finals_seen is not None:
                    self._finals_seen.set()
        elif isinstance(msg, dict):
            action = msg.get("action")
            if action == "worker-status-change" and topic != "all":
                self.records.append(
                    (sc.RECORD_WORKER_STATUS, time.time(), topic, msg.get("status"))
                )
            elif action == "remove-worker" and topic == "all":
                if "processing-tasks" not in msg or "lost-computed-tasks" not in msg:
                    compat.fell_back(compat.REMOVE_WORKER_EVENT)
                    self.records.append(
                        (sc.RECORD_FALLBACK, time.time(), compat.REMOVE_WORKER_EVENT)
                    )
                lost = len(msg.get("processing-tasks") or ())
                self.records.append(
                    (
                        sc.RECORD_WORKER_REMOVED,
                        time.time(),
                        msg.get("worker"),
                        lost,
                        msg.get("stimulus_id") or "",
                        len(msg.get("lost-computed-tasks") or ()),
                    )
                )
            elif topic == "worker-restart-memory":  # the nanny, as it terminates its worker
                self.records.append(
                    (
                        sc.RECORD_WORKER_MEMORY_RESTART,
                        time.time(),
                        msg.get("worker"),
                        msg.get("rss"),
                    )
                )
