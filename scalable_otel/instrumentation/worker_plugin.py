"""Worker plugin: when tasks really start, what each costs, and resource samples.

It measures on the worker, where the work happens, and sends what it saw to the
scheduler in one batch per flush interval (Dask's `log_event`), from where the
client's recorder picks it up. Tasks that end within one interval are never
reported as started here: the scheduler's record of their end carries the
worker's own start and stop times.

Each run has its own plugin on a worker (named after its run id, sending on the run's
own topic). Every plugin measures every task, since tasks running side by side share
the process's CPU, but reports only its run's: those whose annotations name the run
(`semconv.RUNS_ANNOTATION`, set by the run's scheduler plugin). Resource samples are
every run's. Cache lookups and spans made inside a task go to the task's runs.

Batch payload: {"worker": address, "name": name,
    "started": [[key, t, run_id], ...],
    "usage": [[key, start, stop, cpu_s, peak_rss, shared, run_id], ...],
    "samples": [[t, cpu_percent, rss, memory_percent, memory_limit, host, rapl], ...],
    "cache": [{...cache lookup...}, ...],
    "fallbacks": {compat name: count, ...},  # since the last batch (scalable_otel.compat)
    "closing": bool,
    "final": token,  # only in the batch a run's close asked for (`final_flush`)
    "process": {process.pid: ..., host.name: ..., ...},  # until a batch was sent
    "lost": [batches, spans]}  (running totals of this worker: batches it failed to send,
    spans made in tasks it dropped beyond _MAX_PENDING_SPANS; absent while both are 0)
`process` holds OpenTelemetry's process.* and host.* attributes of the worker's process
(`semconv.WORKER_PROCESS_ATTRIBUTES`), for its worker span.
`host` is the host's name; `rapl` its powercap counters `[zones, energy_uj, max_range_uj]`
(three lists, `scalable_otel.powercap`), or None where none can be read.
`run_id` is Dask's id of the execution (the worker's `TaskState.run_id`, given by the
scheduler each time it sends the task), or None: it tells the executions of one key apart.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import sys
import threading
import time

from distributed.diagnostics.plugin import WorkerPlugin

from .. import compat, powercap
from .. import semconv as sc
from ..args import Redaction
from ..span_records import scrubbed
from . import task_context
from .worker_logs import scrub_worker_logs

try:
    import resource
except ImportError:  # not on Windows: peaks are sampled there
    resource = None

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


_RESET_AFTER_S = 0.05
# whether a reset of the peak works in this process: probed once (see _Memory)
_peak_resettable: list[bool] = []
# Spans made inside tasks waiting for the next flush; beyond this a flood is dropped.
_MAX_PENDING_SPANS = 10_000


async def final_flush(
    dask_worker,
    name: str = sc.WORKER_PLUGIN_NAME,
    token: str | None = None,
    heartbeat: bool = False,
) -> bool:
    """Run on a worker at a run's close (`client.run`): its plugin `name` sends what it
    holds now, its batch marked with `token` (`sync_scheduler_plugin` waits for it);
    then, with `heartbeat`, the worker's heartbeat (`send_heartbeat`), in the same round
    trip. Whether the worker has that plugin."""
    plugin = dask_worker.plugins.get(name)
    if plugin is not None:
        plugin.final_flush(token)
    if heartbeat:
        try:
            await send_heartbeat(dask_worker)
        except Exception:  # the figures are then those of the last regular heartbeat
            pass
    return plugin is not None


async def send_heartbeat(dask_worker) -> None:
    """Run on a worker at a run's close: its heartbeat now, so that the fine performance
    metrics it measured since the last one reach the scheduler before the run's final
    figures are read there."""
    await dask_worker.heartbeat()


def _encoded(spans: list) -> bytes:
    """Spans as one JSON document: anything msgpack could not carry (a 128-bit id, an
    odd attribute) fails here, never in the worker's connection to the scheduler."""
    if not spans:
        return b""
    try:
        import orjson

        return orjson.dumps(spans, default=str)
    except Exception:
        return b""


class _Memory:
    """Resident memory of this process, and its peak since the last reset (Linux).

    The peak is the kernel's high-water mark of resident memory, reset by writing
    "5" to /proc/self/clear_refs and read through getrusage (one cheap syscall
    each, where parsing /proc/self/status costs tens of microseconds). Where
    resetting does not work, `can_reset_peak` is False and callers sample RSS.
    """

    def __init__(self):
        self._statm = self._open("/proc/self/statm", os.O_RDONLY)
        self._clear = self._open("/proc/self/clear_refs", os.O_WRONLY)
        if not _peak_resettable:  # the same answer for every run's plugin in the process
            _peak_resettable.append(
                resource is not None and self._clear is not None and self._reset_lowers_peak()
            )
        self.can_reset_peak = _peak_resettable[0] and self._clear is not None

    @staticmethod
    def _open(path, flags):
        try:
            return os.open(path, flags)
        except OSError:
            return None

    def _reset_lowers_peak(self) -> bool:
        """Check once that a reset really forgets a freed 64 MiB block."""
        block = bytearray(64 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        del block
        before = self.peak()
        self.reset_peak()
        return self._clear is not None and self.peak() < before - 32 * 2**20

    def close(self) -> None:
        """Close the two files (a worker's process outlives its runs' plugins)."""
        for fd in (self._statm, self._clear):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._statm = self._clear = None
        self.can_reset_peak = False

    def rss(self) -> int:
        if self._statm is not None:
            try:
                return int(os.pread(self._statm, 64, 0).split()[1]) * _PAGE
            except (OSError, ValueError, IndexError):
                pass
        import psutil

        return psutil.Process().memory_info().rss

    def reset_peak(self) -> None:
        try:
            os.write(self._clear, b"5")
        except (OSError, TypeError):
            self.can_reset_peak = False

    @staticmethod
    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


# platform.machine() -> OpenTelemetry's host.arch values
_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "x86",
    "i686": "x86",
    "x86": "x86",
    "armv7l": "arm32",
    "ppc64le": "ppc64",
    "ppc64": "ppc64",
    "s390x": "s390x",
}


def process_attributes(host: str) -> dict:
    """OpenTelemetry's process.* and host.* attributes of this process (a worker's)."""
    executable = sys.executable or ""
    machine = platform.machine()
    attrs = {
        sc.PROCESS_PID: os.getpid(),
        sc.PROCESS_EXECUTABLE_NAME: os.path.basename(executable),
        sc.PROCESS_EXECUTABLE_PATH: executable,
        sc.PROCESS_RUNTIME_NAME: sys.implementation.name,
        sc.PROCESS_RUNTIME_VERSION: platform.python_version(),
        sc.PROCESS_RUNTIME_DESCRIPTION: sys.version.replace("\n", " "),
        sc.HOST_NAME: host,
        sc.HOST_ARCH: _ARCH.get(machine.lower(), machine),
    }
    return {key: value for key, value in attrs.items() if value}


def _cpu_seconds() -> float:
    """CPU time of this process (all threads, ns resolution) and of its finished children."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


# The plugins set up in this process (several runs, or several workers of one process):
# cache lookups are routed through them, as the cache module has one sink per process.
_plugins: list = []


def _route_cache_lookup(record: dict) -> None:
    """A cache lookup made in a task, to the plugins of the task's runs on its worker."""
    from distributed.worker import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not in a task: no run to give it to
        return
    runs = task_context.task_runs(worker, record.get("key"))
    for plugin in list(_plugins):
        if plugin.worker is worker and (plugin.run_id is None or plugin.run_id in runs):
            plugin._cache_lookup(record)


class WorkerTelemetryPlugin(WorkerPlugin):
    """Per-task CPU and peak memory, task starts and resource samples, from each worker.

    With a `run_id`, it is that run's (its name and topic say so) and reports only the
    run's tasks; without one, every task."""

    idempotent = True

    def __init__(
        self,
        resource_interval: float = 1.0,
        flush_interval: float = 0.2,
        cache_dir: str | None = None,
        run_id: str | None = None,
        trace_id: str | None = None,
        redact_values: list | None = None,
    ):
        self.resource_interval = resource_interval
        self.flush_interval = flush_interval
        self.cache_dir = cache_dir
        self.run_id = run_id
        self.trace_id = trace_id  # hex: spans made inside tasks join the run's trace
        # the user's redaction patterns, (pattern, flags): cut, with the built-in ones, out
        # of the exceptions on spans made in tasks and of Dask's logs of failed tasks
        self.redact_values = redact_values

    @property
    def name(self) -> str:
        return sc.per_run(sc.WORKER_PLUGIN_NAME, self.run_id)

    def _owns(self, ts) -> bool:
        """Whether the worker's TaskState `ts` is a task of this plugin's run (its
        annotations name the run, as `task_context.task_runs` reads them)."""
        if self.run_id is None:
            return True
        try:
            return self.run_id in ((ts.annotations or {}).get(sc.RUNS_ANNOTATION) or ())
        except Exception:  # no such task here, or a Dask with another layout
            return False

    def setup(self, worker):
        """Start measuring on `worker`. The first plugin of a process probes the memory
        peak's reset (a 64 MiB block and a page-table walk: up to a few tenths of a second
        in a large process) in a thread, so a worker's event loop, which a scheduler and a
        client may share (`gen_cluster`), never waits on it: Dask awaits what this returns."""
        if not _peak_resettable:
            return self._probe_then_setup(worker)
        self._setup(worker, _Memory())

    async def _probe_then_setup(self, worker) -> None:
        self._setup(worker, await asyncio.to_thread(_Memory))

    def _setup(self, worker, memory: _Memory) -> None:
        from tornado.ioloop import PeriodicCallback

        self.worker = worker
        self._lock = threading.Lock()
        self._memory = memory
        self._exclusive_peak = worker.state.nthreads == 1 and self._memory.can_reset_peak
        # key -> [start, cpu at start, highest sampled RSS, start reported, ran beside another,
        #         the run's task (else measured only to tell its neighbours they shared),
        #         Dask's run id of this execution]
        self._executing: dict = {}
        self._started: list = []
        self._usage: list = []
        self._samples: list = []
        self._cache: list = []
        self._spans: list = []
        self._batches_lost = 0
        self._spans_dropped = 0
        self._last_cpu = (time.time(), _cpu_seconds())
        self._host = socket.gethostname()
        self._process = process_attributes(self._host)  # sent until a batch goes out
        self._rapl_zones = powercap.zones()  # looked up once; read at every sample
        self._redaction = Redaction(values=self.redact_values or ())
        self._unscrub_logs = scrub_worker_logs(self._redaction)
        from .. import cache
        from .scalable_library import watch_when_reporting

        watch_when_reporting()  # the Scalable tool's lookups in tasks too
        _plugins.append(self)
        cache.set_worker_sink(_route_cache_lookup, self.cache_dir)
        if self.run_id and self.trace_id:
            task_context.attach_run(self.run_id, int(self.trace_id, 16), self._task_span)
        self._callbacks = [
            PeriodicCallback(self._tick, self.flush_interval * 1000),
            PeriodicCallback(self._take_sample, self.resource_interval * 1000),
        ]
        for callback in self._callbacks:
            callback.start()

    def teardown(self, worker) -> None:
        for callback in self._callbacks:
            callback.stop()
        from .. import cache

        if self in _plugins:
            _plugins.remove(self)
        if not _plugins:
            cache.set_worker_sink(None, None)
        self._unscrub_logs()
        if self.run_id:
            task_context.detach_run(self.run_id)
        self.flush(closing=True)
        self._memory.close()

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish == "executing":
            # with an exact peak, the high-water mark read at the end covers the task
            rss = 0 if self._exclusive_peak else self._memory.rss()
            shared = bool(self._executing)
            for state in self._executing.values():
                state[4] = True
            # on the scheduler's clock, as Dask's own startstops are
            start = time.time() + self.worker.scheduler_delay
            ts = self.worker.state.tasks.get(key)
            self._executing[key] = [
                start,
                _cpu_seconds(),
                rss,
                False,
                shared,
                self._owns(ts),
                getattr(ts, "run_id", None),
            ]
        elif start == "executing":
            state = self._executing.pop(key, None)
            if state is None:
                return
            now = time.time() + self.worker.scheduler_delay
            exact = self._exclusive_peak and self._memory.can_reset_peak
            peak = self._memory.peak() if exact else self._memory.rss()
            if exact and now - state[0] >= _RESET_AFTER_S:
                # A new window for the next task. Resetting is not free (on some kernels
                # the pages are faulted back in), so short tasks share a window: a short
                # task's peak is the highest since the last long one ended.
                self._memory.reset_peak()
            if not state[5]:
                return
            self._usage.append(
                [
                    key,
                    state[0],
                    now,
                    round(_cpu_seconds() - state[1], 6),
                    max(state[2], peak),
                    state[4],
                    state[6],
                ]
            )

    def _cache_lookup(self, record: dict) -> None:
        with self._lock:
            self._cache.append(record)

    def _task_span(self, record: dict) -> None:
        # cleaned here, before it leaves the worker: a batch stays in the scheduler's
        # event log, which any client of that scheduler can read
        record = scrubbed(record, self._redaction.scrub)
        with self._lock:
            if len(self._spans) < _MAX_PENDING_SPANS:
                self._spans.append(record)
            else:
                self._spans_dropped += 1

    def _tick(self) -> None:
        if self._executing:
            rss = self._memory.rss()
            for key, state in self._executing.items():
                if rss > state[2]:
                    state[2] = rss
                if not state[3] and state[5]:
                    state[3] = True
                    self._started.append([key, state[0], state[6]])
        self.flush()

    def _take_sample(self) -> None:
        self._samples.append(self._sample(time.time()))

    def final_flush(self, token: str | None = None) -> None:
        """A last sample (so even a short run has one), then everything pending, in a
        batch marked `token` (sent even if empty)."""
        if time.time() - self._last_cpu[0] > 0.05:
            self._take_sample()
        self.flush(final=token)

    def _sample(self, now: float) -> list:
        cpu = _cpu_seconds()
        t0, c0 = self._last_cpu
        self._last_cpu = (now, cpu)
        cpu_percent = round(100.0 * (cpu - c0) / (now - t0), 2) if now > t0 else 0.0
        rss = self._memory.rss()
        limit = self.worker.memory_manager.memory_limit or 0
        if limit:
            share = rss / limit
        else:  # no limit: the share of the host's memory
            import psutil

            share = rss / psutil.virtual_memory().total
        rapl = powercap.read_counters(self._rapl_zones) if self._rapl_zones else None
        if rapl is not None:
            zones = sorted(rapl[0])
            rapl = [zones, [rapl[0][z] for z in zones], [rapl[1][z] for z in zones]]
        return [
            now + self.worker.scheduler_delay,
            cpu_percent,
            rss,
            round(100.0 * share, 2),
            limit,
            self._host,
            rapl,
        ]

    def flush(self, closing: bool = False, final: str | None = None) -> None:
        """Send what was seen since the last flush to the scheduler (`final`: the token
        of a run's close, in the batch's "final" key)."""
        with self._lock:
            cache, self._cache = self._cache, []
            spans, self._spans = self._spans, []
        fallbacks = compat.take_unsent()
        if not (
            self._started
            or self._usage
            or self._samples
            or cache
            or spans
            or fallbacks
            or closing
            or final
            or self._process
        ):
            return
        payload = {
            "worker": self.worker.address,
            "name": str(self.worker.name),
            "started": self._started,
            "usage": self._usage,
            "samples": self._samples,
            "cache": cache,
            "spans": _encoded(spans),
            "fallbacks": fallbacks,
            "closing": closing,
        }
        if final:
            payload["final"] = final
        if self._batches_lost or self._spans_dropped:
            payload["lost"] = [self._batches_lost, self._spans_dropped]
        if self._process:
            payload["process"] = self._process
        self._started, self._usage, self._samples = [], [], []
        try:
            self.worker.log_event(sc.per_run(sc.WORKER_TOPIC, self.run_id), payload)
            self._process = None
        except Exception:  # telemetry never breaks the worker: counted in the next batch
            self._batches_lost += 1
