"""Every span, metric, attribute and event name scalable-otel emits, in one place.

These are the project's semantic conventions: the JSONL run directory, the OTLP
backends and the analysis code all agree on them through this module.
"""

from typing import NamedTuple

from opentelemetry.semconv._incubating.attributes import cicd_attributes as _cicd
from opentelemetry.semconv._incubating.attributes import host_attributes as _host
from opentelemetry.semconv._incubating.attributes import process_attributes as _process
from opentelemetry.semconv.attributes import code_attributes as _code
from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv.attributes import exception_attributes as _exception
from opentelemetry.semconv.attributes import service_attributes as _service

SCHEMA_VERSION = 1
INSTRUMENTATION_SCOPE = "scalable_otel"

# --- run statuses (run.json `status`; crashed and unknown are what a reader infers) ---------
RUN_RUNNING = "running"
RUN_COMPLETED = "completed"
RUN_FAILED = "failed"
RUN_INTERRUPTED = "interrupted"
# a run whose process died: written by its telemetry process when the driver's pipe
# closes, or inferred by a reader (the driver's pid gone on this host, or no heartbeat
# for HEARTBEAT_STALE_S from another host)
RUN_CRASHED = "crashed"
RUN_UNKNOWN = "unknown"  # a run without a readable run.json
#: Statuses a run has once its session closed it: only then are run.json's counts its own.
RUN_ENDED = (RUN_COMPLETED, RUN_FAILED, RUN_INTERRUPTED)
#: Seconds between rewrites of a live run's run.json `heartbeat_time`.
HEARTBEAT_INTERVAL_S = 5.0
#: A `running` run read on another host whose heartbeat is older than this is `crashed`
#: (three missed beats, plus a margin for a loaded machine and clocks that differ a little).
HEARTBEAT_STALE_S = 3 * HEARTBEAT_INTERVAL_S + 15.0

# --- span names -------------------------------------------------------------
SPAN_RUN = "scalable.run"
SPAN_EXECUTE = "execute"
SPAN_WORKER = "worker"
# A task span is named by the task's name (its function or task prefix), never its key.
# A group span (a `distributed.span` block) is named by the block's own name, its last
# tag: `with span("calibration"): with span("region-3"):` makes "calibration" and, under
# it, "region-3"; its kind attribute (KIND_GROUP) tells it from a task span.

# --- span kinds (attribute scalable.span) -------------------------------------
KIND = "scalable.span"
KIND_RUN = "run"
KIND_TASK = "task"
KIND_EXECUTE = "execute"
KIND_WORKER = "worker"
KIND_GROUP = "group"

# --- attributes ---------------------------------------------------------------
RUN_ID = "scalable.run.id"
RUN_STATUS = "scalable.run.status"
PROJECT = "scalable.project"
TARGET = "scalable.target"
PROVIDER = "scalable.provider"
TASK_NAME = "scalable.task.name"
TASK_KEY = "scalable.task.key"
TASK_ATTEMPT = "scalable.task.attempt"
TASK_REASON = "scalable.task.reason"
TASK_ARGS = "scalable.task.args"
TASK_STATUS = "scalable.task.status"
TASK_DURATION = "scalable.task.duration_s"
TASK_QUEUE_WAIT = "scalable.task.queue_wait_s"
TASK_DEPENDENCIES = "scalable.task.dependencies"
TASK_COMPONENT = "scalable.task.component"
TASK_NBYTES = "scalable.task.nbytes"
TASK_RESULT_TYPE = "scalable.task.result_type"
# the Dask span (`distributed.span`) a task was submitted in, on group, task and execute
# spans: its id (Dask's span id) and its path of names, outermost first
GROUP_ID = "scalable.group.id"
GROUP_PATH = "scalable.group.path"
TASK_CPU_SECONDS = "scalable.task.cpu_seconds"
TASK_CPUS_USED = "scalable.task.cpus_used"
TASK_PEAK_MEMORY = "scalable.task.peak_memory_bytes"
TASK_WALL = "scalable.task.wall_s"
TASK_CPU_SHARED = "scalable.task.cpu_shared"
TASK_CAUSE_KEY = "scalable.task.caused_by.key"
TASK_CAUSE_NAME = "scalable.task.caused_by.name"
WORKER = "scalable.worker"
WORKER_NAME = "scalable.worker.name"
WORKER_NTHREADS = "scalable.worker.nthreads"
WORKER_MEMORY_LIMIT = "scalable.worker.memory_limit"
WORKER_HOST = "scalable.worker.host"
WORKER_PID = "scalable.worker.pid"
# What a batch system says of a worker (workers.jsonl field -> span attribute)
WORKER_DETAILS = {
    "slurm_job_id": "scalable.worker.slurm.job_id",
    "requested_cores": "scalable.worker.requested.cores",
    "requested_memory": "scalable.worker.requested.memory",
    "queue": "scalable.worker.queue",
}
WORKER_END = "scalable.worker.end"
WORKER_END_REASON = "scalable.worker.end_reason"
WORKER_LOST_TASKS = "scalable.worker.lost_tasks"
WORKER_LOST_RESULTS = "scalable.worker.lost_results"
ERROR_TYPE = _error.ERROR_TYPE  # OpenTelemetry's own key: the exception's class name
ERROR_MESSAGE = "scalable.error.message"
ERROR_TRACEBACK = "scalable.error.traceback"
# OpenTelemetry's exception attributes, on the log record of a failures.jsonl line
EXCEPTION_TYPE = _exception.EXCEPTION_TYPE
EXCEPTION_MESSAGE = _exception.EXCEPTION_MESSAGE
EXCEPTION_STACKTRACE = _exception.EXCEPTION_STACKTRACE

# --- OpenTelemetry's semantic conventions, emitted beside the scalable.* keys -----------
# (docs/telemetry-schema.md#semantic-conventions: which span, resource or metric has which)
# The run span is a CI/CD pipeline run, a task span one run of a pipeline task, a worker a
# CI/CD worker; the SDK pins the opentelemetry-semantic-conventions release these come from.
CICD_PIPELINE_NAME = _cicd.CICD_PIPELINE_NAME  # the project
CICD_PIPELINE_RUN_ID = _cicd.CICD_PIPELINE_RUN_ID  # the run id
CICD_PIPELINE_ACTION_NAME = _cicd.CICD_PIPELINE_ACTION_NAME
CICD_PIPELINE_RESULT = _cicd.CICD_PIPELINE_RESULT  # the run's, on the run span's end
CICD_PIPELINE_TASK_NAME = _cicd.CICD_PIPELINE_TASK_NAME  # the task name
CICD_PIPELINE_TASK_RUN_ID = _cicd.CICD_PIPELINE_TASK_RUN_ID  # `task_run_id`
CICD_PIPELINE_TASK_RUN_RESULT = _cicd.CICD_PIPELINE_TASK_RUN_RESULT
CICD_WORKER_ID = _cicd.CICD_WORKER_ID  # the worker's address
CICD_WORKER_NAME = _cicd.CICD_WORKER_NAME  # the worker's name
CICD_WORKER_URL_FULL = _cicd.CICD_WORKER_URL_FULL  # the worker's address (a URL)
CODE_FUNCTION_NAME = _code.CODE_FUNCTION_NAME  # a task function's module and qualified name
SERVICE_NAME = _service.SERVICE_NAME
SERVICE_INSTANCE_ID = _service.SERVICE_INSTANCE_ID
#: A run's `service.name` unless OTEL_SERVICE_NAME says otherwise.
DEFAULT_SERVICE_NAME = "scalable-otel"
PROCESS_PID = _process.PROCESS_PID
PROCESS_EXECUTABLE_NAME = _process.PROCESS_EXECUTABLE_NAME
PROCESS_EXECUTABLE_PATH = _process.PROCESS_EXECUTABLE_PATH
PROCESS_RUNTIME_NAME = _process.PROCESS_RUNTIME_NAME
PROCESS_RUNTIME_VERSION = _process.PROCESS_RUNTIME_VERSION
PROCESS_RUNTIME_DESCRIPTION = _process.PROCESS_RUNTIME_DESCRIPTION
HOST_NAME = _host.HOST_NAME
HOST_ARCH = _host.HOST_ARCH
#: What a worker tells of its process and host (worker span attributes; workers.jsonl
#: keeps its own fields): measured by its worker plugin, sent once.
WORKER_PROCESS_ATTRIBUTES = (
    PROCESS_PID,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_EXECUTABLE_PATH,
    PROCESS_RUNTIME_NAME,
    PROCESS_RUNTIME_VERSION,
    PROCESS_RUNTIME_DESCRIPTION,
    HOST_NAME,
    HOST_ARCH,
)
PIPELINE_ACTION_RUN = _cicd.CicdPipelineActionNameValues.RUN.value
_RESULT = _cicd.CicdPipelineTaskRunResultValues
RESULT_SUCCESS = _RESULT.SUCCESS.value
RESULT_FAILURE = _RESULT.FAILURE.value  # the task raised
RESULT_ERROR = _RESULT.ERROR.value  # Dask's fault, not the task's: every worker running it died
RESULT_CANCELLATION = _RESULT.CANCELLATION.value
RESULT_SKIP = _RESULT.SKIP.value  # never ran: a task it depends on failed
#: cicd.pipeline.result of a run by its status (run.json's; crashed written by the
#: telemetry process when the driver died).
RUN_RESULTS = {
    RUN_COMPLETED: _cicd.CicdPipelineResultValues.SUCCESS.value,
    RUN_FAILED: _cicd.CicdPipelineResultValues.FAILURE.value,
    RUN_INTERRUPTED: _cicd.CicdPipelineResultValues.CANCELLATION.value,
    RUN_CRASHED: _cicd.CicdPipelineResultValues.ERROR.value,
}
#: The error.type of a worker span whose worker died (its scalable.worker.end says so too).
WORKER_ERROR_TYPE = "worker_crashed"


def task_run_id(key: str, attempt: int) -> str:
    """cicd.pipeline.task.run.id of one life of a key in a run (a task span): its key, and
    for a later life (the key resubmitted, recomputed or retried) `#` and the attempt it
    began with, so that it is unique in the run as the convention asks.

    >>> task_run_id("sim-1f2e", 1), task_run_id("sim-1f2e", 3)
    ('sim-1f2e', 'sim-1f2e#3')
    """
    return key if attempt <= 1 else f"{key}#{attempt}"


# --- span events ----------------------------------------------------------------
EVENT_ATTEMPT_LOST = "attempt_lost"

# --- why a task ran again (the `reason` field; none for a key's first execution) -----
REASON_RETRY = "retry"  # its previous attempt raised with retries left, or its worker died
REASON_RECOMPUTE = "recompute"  # its result was lost with a worker, or released, and needed again
REASON_RESUBMIT = "resubmit"  # submitted again after the scheduler had forgotten it

# --- task statuses ------------------------------------------------------------
STATUS_COMPLETED = "completed"
STATUS_FAILED = "failed"
STATUS_CANCELLED = "cancelled"

# --- JSONL event names (the `event` field) --------------------------------------
TASK_SUBMITTED = "task_submitted"
TASK_STARTED = "task_started"
TASK_COMPLETED = "task_completed"
TASK_FAILED = "task_failed"
TASK_CANCELLED = "task_cancelled"
WORKER_ADDED = "worker_added"
WORKER_REMOVED = "worker_removed"
WORKER_CRASHED = "worker_crashed"
RESOURCE_SAMPLE = "resource_sample"
TASK_RESOURCES = "task_resources"
CACHE_LOOKUP = "cache_lookup"
FINE_METRIC = "fine_metric"  # metrics.jsonl: one of Dask's fine performance metrics

# --- fine performance metrics (metrics.jsonl's `scope`) ----------------------------------
# Dask's cumulative worker metrics, by what they are attributed to: a task prefix of the
# run (context `execute`), a Dask span (`group`: the span holding the run's tasks), or the
# cluster (contexts without a prefix: `gather-dep`, `get-data`, `memory-monitor`).
SCOPE_PREFIX = "prefix"
SCOPE_GROUP = "group"
SCOPE_CLUSTER = "cluster"
#: The fields of one fine metric (a `fine_metrics` record's row, a metrics.jsonl line's
#: fields after the common ones): `prefix` only in context `execute`, `group` null for
#: Dask's default span, `group_path` the span's names, outermost first.
FINE_METRIC_FIELDS = (
    "scope",
    "context",
    "prefix",
    "group",
    "group_path",
    "activity",
    "unit",
    "value",
)
#: Seconds between the scheduler plugin's readings of the figures during a run (and one
#: more at its close); a reading sends only the figures that changed.
FINE_METRICS_INTERVAL_S = 10.0

# --- why a cache lookup missed (cache_lookup's `miss_reason`; misses only) -------------
CACHE_MISS_FIRST = "first"  # the function never stored an entry in this cache
CACHE_MISS_ARGUMENTS = "arguments"  # `miss_arguments` names those unlike the nearest entry's
CACHE_MISS_CODE = "code"  # an entry of the same arguments, stored by other code
CACHE_MISS_EVICTED = "evicted"  # this very entry was stored, and its file is gone
CACHE_MISS_CORRUPT = "corrupt"  # its file is there and unreadable or unverifiable
#: The reasons, in the order reports list them.
CACHE_MISS_REASONS = (
    CACHE_MISS_FIRST,
    CACHE_MISS_ARGUMENTS,
    CACHE_MISS_CODE,
    CACHE_MISS_EVICTED,
    CACHE_MISS_CORRUPT,
)
#: What a reader counts a miss without a reason as (older runs, the Scalable tool's cache).
CACHE_MISS_UNKNOWN = "unknown"

# --- metric instruments --------------------------------------------------------------
METRIC_TASKS_SUBMITTED = "scalable.tasks.submitted"
METRIC_TASKS_COMPLETED = "scalable.tasks.completed"
METRIC_TASKS_FAILED = "scalable.tasks.failed"
METRIC_TASK_DURATION = "scalable.task.duration"
METRIC_TASK_QUEUE_WAIT = "scalable.task.queue_wait"
METRIC_WORKERS_ACTIVE = "scalable.workers.active"
METRIC_WORKER_CPU = "scalable.worker.cpu.utilization"
METRIC_WORKER_MEMORY = "scalable.worker.memory.usage"
METRIC_CACHE_HITS = "scalable.cache.hits"
METRIC_CACHE_MISSES = "scalable.cache.misses"
METRIC_ENERGY = "scalable.energy"
METRIC_CARBON = "scalable.carbon"
METRIC_FINE_TIME = "scalable.dask.fine_time"
METRIC_FINE_BYTES = "scalable.dask.fine_data"

# Metric attribute keys: all of bounded cardinality (no keys, no run ids, no worker
# addresses: ports change with every cluster). M_TASK comes with cicd.pipeline.task.name
# and M_WORKER (a worker's name) with cicd.worker.name, the same values under OTel's keys.
M_TASK = "task"
M_WORKER = "worker"
M_TASK_NAME = CICD_PIPELINE_TASK_NAME
M_WORKER_NAME = CICD_WORKER_NAME
M_RESULT = CICD_PIPELINE_TASK_RUN_RESULT  # on the task duration histogram only
M_STATUS = "status"
M_FUNCTION = "function"
M_METHOD = "method"  # of an energy figure: estimated or measured
M_HOST = "host"
M_SCOPE = "scope"  # of a fine metric: prefix, group or cluster
M_CONTEXT = "context"
M_ACTIVITY = "activity"
M_GROUP = "group"  # a Dask span's names joined by "/" ("" for the default span)
ENERGY_ESTIMATED = "estimated"
ENERGY_MEASURED = "measured"

# Second-scale histogram boundaries: the SDK's defaults are made for milliseconds.
SECONDS_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
)

# --- Dask plumbing -------------------------------------------------------------------
# Each run's plugins and topics carry its run id (`per_run`), so that runs sharing one
# scheduler neither replace nor unregister each other's; these are the prefixes.
SCHEDULER_PLUGIN_NAME = "scalable-otel-scheduler"
WORKER_PLUGIN_NAME = "scalable-otel-worker"
WORKER_TOPIC = "scalable-otel-worker"
FORWARD_TOPIC = "scalable-otel-records"
# The task annotation naming the runs a task belongs to (a tuple of run ids): set by each
# run's scheduler plugin, read on workers to give a task's usage and spans to its runs.
RUNS_ANNOTATION = "scalable_otel_runs"


def per_run(name: str, run_id: str | None) -> str:
    """A plugin or topic name of one run: `per_run(WORKER_PLUGIN_NAME, run_id)`."""
    return f"{name}-{run_id}" if run_id else name


# --- lifecycle records ------------------------------------------------------------------
# What the plugins and the session send a run's recorder: plain tuples `(kind, *fields)`,
# small and quick to pickle, handled by `Recorder._on_<kind>(*fields)`. Each kind and its
# fields are declared here and nowhere else: builders name their kind by these
# constants, the recorder checks a record's length against its fields, and the table in
# docs/telemetry-schema.md and the handlers' signatures are tested against this mapping.
# `t` is when the record was made, in epoch seconds (on the scheduler's clock when the
# scheduler plugin made it).


class RecordKind(NamedTuple):
    """One kind of lifecycle record: its fields after the kind, who sends it, and why."""

    fields: tuple[str, ...]
    source: str
    meaning: str


RECORD_SUBMIT = "submit"
RECORD_READY = "ready"
RECORD_PROCESSING = "processing"
RECORD_DONE = "done"
RECORD_ERROR = "error"
RECORD_DEP_ERROR = "dep_error"
RECORD_REQUEUE = "requeue"
RECORD_FORGOTTEN = "forgotten"
RECORD_WORKER_ADDED = "worker_added"
RECORD_WORKER_STATUS = "worker_status"
RECORD_WORKER_REMOVED = "worker_removed"
RECORD_WORKER_MEMORY_RESTART = "worker_memory_restart"
RECORD_WORKER_BATCH = "worker_batch"
RECORD_SYNC = "sync"
RECORD_CLOSING = "closing"
RECORD_FORWARDED = "forwarded"
RECORD_CACHE = "cache"
#: The fields of one cache lookup (`cache.report_lookup`'s dict, the `cache` record's
#: `lookup`): `t` is its time; the others become the cache_lookup line's fields.
CACHE_LOOKUP_FIELDS = (
    "t",
    "function",
    "cache_key",
    "result",
    "lookup_s",
    "saved_s",
    "compute_s",
    "key",
    "worker",
    "miss_reason",
    "miss_arguments",
)
RECORD_FALLBACK = "fallback"
RECORD_FINE_METRICS = "fine_metrics"

_SCHEDULER = "scheduler plugin"
_SESSION = "session"

RECORDS: dict[str, RecordKind] = {
    RECORD_SUBMIT: RecordKind(
        ("t", "key", "name", "dependency_keys", "group"),
        _SCHEDULER,
        "A new task of a graph; `name` is its key prefix; `group` is the `distributed.span` "
        "it was submitted in, `(ids, names)` from the outermost span in, or None.",
    ),
    RECORD_READY: RecordKind(
        ("t", "key"),
        _SCHEDULER,
        "The task may run: queued or waiting for a worker.",
    ),
    RECORD_PROCESSING: RecordKind(
        ("t", "key", "worker", "run_id"),
        _SCHEDULER,
        "The scheduler sent the task to `worker` (ready, if it was not yet); `run_id` is "
        "Dask's id of this execution.",
    ),
    RECORD_DONE: RecordKind(
        ("t", "key", "worker", "start", "stop", "nbytes", "typename", "run_id"),
        _SCHEDULER,
        "The task's result is in memory; `start` and `stop` are the worker's compute times.",
    ),
    RECORD_ERROR: RecordKind(
        ("t", "key", "worker", "start", "stop", "exception_text", "traceback_text", "run_id"),
        _SCHEDULER,
        "The task raised (or every worker that ran it died).",
    ),
    RECORD_DEP_ERROR: RecordKind(
        ("t", "key", "blame_key", "blame_name"),
        _SCHEDULER,
        "The task failed because a task it depends on failed; Dask blames `blame_key`.",
    ),
    RECORD_REQUEUE: RecordKind(
        ("t", "key", "finish_state", "stimulus_id", "run_id"),
        _SCHEDULER,
        "The task left its worker without a result: a retry, a lost worker or a release.",
    ),
    RECORD_FORGOTTEN: RecordKind(
        ("t", "key"),
        _SCHEDULER,
        "The scheduler forgot the task (released before it finished, if still open).",
    ),
    RECORD_WORKER_ADDED: RecordKind(
        ("t", "address", "name", "nthreads", "memory_limit", "host", "pid", "details"),
        _SCHEDULER,
        "A worker joined; `details` is what a batch system says of it, or None.",
    ),
    RECORD_WORKER_STATUS: RecordKind(
        ("t", "address", "status"),
        _SCHEDULER,
        "A worker's status changed (a closing worker's removal is not a crash).",
    ),
    RECORD_WORKER_REMOVED: RecordKind(
        ("t", "address", "lost_tasks", "stimulus_id", "lost_results"),
        _SCHEDULER,
        "A worker left, with the tasks it was running and the results it held.",
    ),
    RECORD_WORKER_MEMORY_RESTART: RecordKind(
        ("t", "address", "rss"),
        _SCHEDULER,
        "A worker's nanny terminates it for going over its memory limit.",
    ),
    RECORD_WORKER_BATCH: RecordKind(
        ("t", "address", "payload"),
        _SCHEDULER,
        "A worker plugin's batch: task starts, task usage, samples, cache lookups, spans.",
    ),
    RECORD_SYNC: RecordKind(
        ("t", "token"),
        _SCHEDULER,
        "A mark the session waits for: every record before it has reached the recorder.",
    ),
    RECORD_CLOSING: RecordKind(
        ("t",),
        _SESSION,
        "The session is shutting Dask down: workers removed from now on did not crash.",
    ),
    RECORD_FORWARDED: RecordKind(
        ("t", "batch"),
        _SESSION,
        "A batch of scheduler plugin records from a scheduler in another process.",
    ),
    RECORD_CACHE: RecordKind(
        ("lookup",),
        _SESSION,
        "A cache lookup in the client's process (a cache.jsonl line): `lookup` is a dict of "
        + ", ".join(f"`{name}`" for name in CACHE_LOOKUP_FIELDS)
        + " (the last two for a miss that says why).",
    ),
    RECORD_FINE_METRICS: RecordKind(
        ("t", "rows"),
        _SCHEDULER,
        "Dask's fine performance metrics that changed since the last such record: each "
        "row holds " + ", ".join(f"`{name}`" for name in FINE_METRIC_FIELDS) + ", the "
        "value the run's total so far (since the run's start, or since the span held a "
        "task of the run).",
    ),
    RECORD_FALLBACK: RecordKind(
        ("t", "name"),
        _SCHEDULER,
        "A private Dask name the plugin relies on has moved (`scalable_otel.compat`).",
    ),
}
