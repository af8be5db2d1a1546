"""Scheduler plugin: task transitions and worker changes, captured as small records.

Hooks run on the scheduler's event loop, so each does O(1) work: it appends a
tuple to a deque. A `lifecycle.Recorder` thread in the client's process drains
the deque and turns the records into spans and metrics. When the scheduler
runs in another process (a `tcp://` target) the plugin instead forwards its
records in batches to the client through Dask's event topics.

Records are plain tuples `(kind, t, *fields)`, t the scheduler's time in epoch s; each
kind this plugin makes and its fields are declared once, in `semconv.RECORDS` (the table
of docs/telemetry-schema.md, "Lifecycle records").
"""

from __future__ import annotations

import time
from collections import deque

from distributed.diagnostics.plugin import SchedulerPlugin

from .. import semconv as sc

_READY_STATES = frozenset({"queued", "no-worker"})
_REQUEUE_STATES = frozenset({"released", "waiting"})
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


def sync_scheduler_plugin(dask_scheduler, token: str) -> None:
    """Run on the scheduler (`Client.run_on_scheduler`): put a sync mark in the records."""
    plugin = dask_scheduler.plugins.get(sc.SCHEDULER_PLUGIN_NAME)
    if plugin is not None:
        plugin.sync(token)


def _startstop(kwargs) -> tuple[float | None, float | None]:
    for ss in kwargs.get("startstops") or ():
        if ss.get("action") == "compute":
            return ss["start"], ss["stop"]
    return None, None


def _bound_topic(scheduler, topic: str) -> None:
    """Keep only a few of our batches in the scheduler's event log.

    The scheduler stores every event it publishes (100,000 per topic by
    default); our batches are consumed as they pass, and keeping them would
    make the client process grow with the length of the run.
    """
    try:
        from distributed.broker import Topic

        topics = scheduler._broker._topics
        bounded = Topic(maxlen=4)
        if topic in topics:
            bounded.subscribers = topics[topic].subscribers
        topics[topic] = bounded
    except Exception:  # a Dask without this private layout: the default bound applies
        pass


class TaskRecordPlugin(SchedulerPlugin):
    """Captures lifecycle records on the scheduler. See the module docstring."""

    name = sc.SCHEDULER_PLUGIN_NAME

    def __init__(self, forward: bool = False, forward_interval: float = 0.2):
        self.forward = forward
        self.forward_interval = forward_interval
        self.records: deque = deque()
        self._scheduler = None
        self._ready: set = set()
        self._pc = None
        # name -> extra worker facts (a batch system's job id and request); set by the
        # session on the plugin instance its in-process scheduler holds
        self.worker_details = None

    def __getstate__(self):
        return {"forward": self.forward, "forward_interval": self.forward_interval}

    def __setstate__(self, state):
        self.__init__(**state)

    async def start(self, scheduler) -> None:
        self._scheduler = scheduler
        for topic in (sc.WORKER_TOPIC, sc.FORWARD_TOPIC):
            _bound_topic(scheduler, topic)
        now = time.time()
        for ws in list(scheduler.workers.values()):
            self._worker_added(scheduler, ws, now)
        if self.forward:
            from tornado.ioloop import PeriodicCallback

            self._pc = PeriodicCallback(self._forward, self.forward_interval * 1000)
            self._pc.start()

    async def close(self) -> None:
        if self._pc is not None:
            self._pc.stop()
            self._forward()

    def sync(self, token: str) -> None:
        """Mark this point in the record stream; the recorder reports when it gets there."""
        self.records.append((sc.RECORD_SYNC, time.time(), token))
        if self.forward:
            self._forward()

    def _forward(self) -> None:
        if not self.records or self._scheduler is None:
            return
        batch = []
        while self.records:
            batch.append(self.records.popleft())
        self._scheduler.log_event(sc.FORWARD_TOPIC, batch)

    # --- graph and transitions ----------------------------------------------------
    def update_graph(self, scheduler, *, tasks=(), **kwargs) -> None:
        now = time.time()
        append = self.records.append
        state = scheduler.tasks
        for key in tasks:
            ts = state.get(key)
            # Only new tasks: a graph also touches finished or running tasks it depends on.
            if ts is None or ts.run_spec is None or ts.state != "released":
                continue
            deps = [d.key for d in ts.dependencies] if ts.dependencies else []
            append((sc.RECORD_SUBMIT, now, key, ts.prefix.name, deps))

    def _task(self, key):
        """The scheduler's TaskState of `key`, or None."""
        return self._scheduler.tasks.get(key) if self._scheduler is not None else None

    def transition(self, key, start, finish, *args, stimulus_id=None, **kwargs) -> None:
        if start == "processing":
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
        if topic == sc.WORKER_TOPIC:
            self.records.append((sc.RECORD_WORKER_BATCH, time.time(), msg.get("worker"), msg))
        elif isinstance(msg, dict):
            action = msg.get("action")
            if action == "worker-status-change" and topic != "all":
                self.records.append(
                    (sc.RECORD_WORKER_STATUS, time.time(), topic, msg.get("status"))
                )
            elif action == "remove-worker" and topic == "all":
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
