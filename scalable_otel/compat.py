"""Private names of Dask, OpenTelemetry and the Scalable tool that the package relies on.

None of them is a promise of its library, so each is named here once, with what a run
records without it. The code that uses one never lets it break a task or a run: it
passes the library's calls through unchanged (`*args, **kwargs`), catches any failure of
its own, and falls back to recording less (`fell_back(NAME)`): one warning per process
names what moved. The counts of workers (with their batches) and of the scheduler plugin
(a `fallback` record) reach run.json's `telemetry_fallbacks` ({} in a healthy run); a
fallback in the session's own process (an exporter, the Scalable tool's cache in the
client) is the warning alone. tests/test_canaries.py checks each name against the
installed versions and fails naming what moved; pyproject.toml bounds the versions that
were tested.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

RUN_TASK = "distributed.worker._run_task_simple(task, data, time_delay)"
BROKER_TOPICS = "distributed.Scheduler._broker._topics"
TRANSITION_KWARGS = (
    "transition keywords worker, startstops, nbytes, typename, exception_text, "
    "traceback_text, cause"
)
STIMULUS_IDS = "stimulus ids task-erred-* and *worker*"
REMOVE_WORKER_EVENT = "the scheduler's remove-worker event"
SPAN_ATTRIBUTES = "opentelemetry.sdk BoundedAttributes._dict"
ACTIVE_SPAN_PROCESSOR = "opentelemetry.sdk TracerProvider._active_span_processor"
PREFERRED_TEMPORALITY = "opentelemetry.sdk MetricExporter._preferred_temporality"
SDK_LOGS = "opentelemetry.sdk._logs"
READABLE_SPAN = "opentelemetry.sdk ReadableSpan._attributes, _events, _status, _end_time"
SCALABLE_CACHE = "scalable.caching.Cache"
SPAN_ANNOTATION = (
    "distributed.span's task annotation span={'name': names, 'ids': ids}, kept on the "
    "scheduler's TaskState by its spans extension"
)
FINE_METRICS = (
    "distributed Scheduler.cumulative_worker_metrics, the spans extension's Span.name, "
    "children and cumulative_worker_metrics"
)
WORKER_CLIENT_ID = "the id of a worker's own client (Worker._get_client: Client-worker-<uuid>)"
CLIENT_START = (
    "distributed.Client._start, the coroutine that `await Client(asynchronous=True)` and "
    "`async with` await"
)
CLIENT_CLOSE = (
    "distributed.Client._close, the coroutine that an asynchronous client's close() and "
    "__aexit__ return, and Dask's own test clusters await"
)
WORKER_PLUGIN_HANDLER = (
    "distributed.Scheduler.register_worker_plugin(comm, plugin, name, idempotent=) and "
    "the config distributed.scheduler.reuse-broadcast-comm"
)

# what a run records without each name
LOST = {
    RUN_TASK: "spans made inside tasks do not nest under their task's span",
    BROKER_TOPICS: "the scheduler keeps Dask's default number of telemetry batches",
    TRANSITION_KWARGS: "task times, result types or error texts are missing",
    STIMULUS_IDS: "retries and lost workers are not told apart from releases",
    REMOVE_WORKER_EVENT: "a removed worker's lost tasks and results are not counted",
    SPAN_ATTRIBUTES: "attributes are copied (slower, same lines)",
    ACTIVE_SPAN_PROCESSOR: "forward_spans_to() forwards nothing",
    PREFERRED_TEMPORALITY: "OTLP metrics keep the SDK's default temporality",
    SDK_LOGS: "log processors passed in get no resource samples, measurements or cache lookups",
    READABLE_SPAN: "the recorder's spans reach exporters without what was set after their start",
    SCALABLE_CACHE: "the Scalable tool's cache lookups are not recorded",
    SPAN_ANNOTATION: "tasks submitted in distributed.span blocks are not grouped",
    FINE_METRICS: "metrics.jsonl misses Dask's fine performance metrics (per prefix or per span)",
    WORKER_CLIENT_ID: "a client a worker makes outside its tasks records a run of its own",
    CLIENT_START: "asynchronous clients record no run",
    WORKER_PLUGIN_HANDLER: (
        "the client registers the run's worker plugin, and the scheduler keeps its comms "
        "to the workers open (as after a user's own register_plugin)"
    ),
    CLIENT_CLOSE: (
        "an asynchronous client closed other than by close(), shutdown() or `async with` "
        "has its run finished at exit, without flushing its workers"
    ),
}

_lock = threading.Lock()
_counts: dict[str, int] = {}  # since the process started
_unsent: dict[str, int] = {}  # since the last take_unsent()


def fell_back(name: str, exc: BaseException | None = None) -> None:
    """Count one fallback for `name` (a constant of this module); warn at its first.

    Never raises: it is called from inside tasks and on the scheduler's event loop.
    """
    try:
        with _lock:
            first = name not in _counts
            _counts[name] = _counts.get(name, 0) + 1
            _unsent[name] = _unsent.get(name, 0) + 1
        if first:
            logger.warning(
                "scalable-otel: %s has moved or failed (%s): the workflow goes on, but %s",
                name,
                exc if exc is not None else "not found",
                LOST.get(name, "less is recorded"),
            )
    except Exception:  # a warning that cannot be printed is still not the task's problem
        pass


def counts() -> dict[str, int]:
    """Fallbacks counted in this process, by name."""
    with _lock:
        return dict(_counts)


def take_unsent() -> dict[str, int]:
    """Fallbacks counted since the last call (a worker sends them with its batch)."""
    global _unsent
    with _lock:
        taken, _unsent = _unsent, {}
    return taken


def merge(total: dict[str, int], more) -> None:
    """Add counts `more` (from a worker's batch: checked, as data from the wire) to `total`."""
    if not isinstance(more, dict):
        return
    for name, count in more.items():
        if isinstance(name, str) and isinstance(count, int) and count > 0:
            total[name] = total.get(name, 0) + count
