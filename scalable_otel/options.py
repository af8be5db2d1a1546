"""The option objects of `ScalableSession`: rare settings, grouped by what they are about.

A session takes the common settings as keywords (`target`, `n_workers`,
`threads_per_worker`, `project`, `manifest`, `runs_dir`, `cache_dir`) and the rare ones
as one object each::

    from scalable_otel import ExportOptions, RecordingOptions, ScalableSession

    with ScalableSession(
        target="local",
        n_workers=4,
        exports=ExportOptions(otlp_endpoint="http://127.0.0.1:4317", otlp_protocol="grpc"),
        recording=RecordingOptions(flush_interval=0.5),
    ) as session:
        ...

- `cluster=ClusterOptions(...)`: the cluster a session starts (memory per worker, more
  keywords for `LocalCluster` or `SLURMCluster`);
- `exports=ExportOptions(...)`: where spans and metrics go besides the run directory
  (OTLP, Prometheus; `scalable_otel.exporters.settings`);
- `redaction=Redaction(...)`: what task argument summaries hide (`scalable_otel.args`);
- `pipeline=PipelineOptions(...)`: your own OpenTelemetry span processors, metric
  readers and log processors on the run's pipeline;
- `recording=RecordingOptions(...)`: where the run's OpenTelemetry work happens and how
  often workers report.

Each is plain, immutable data checked when it is built: a wrong option raises a
TypeError or ValueError naming it. An option left at None comes from its environment
variable, as each class's docstring says.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .args import Redaction
from .exporters.settings import ExportOptions

__all__ = [
    "ClusterOptions",
    "ExportOptions",
    "PipelineOptions",
    "RecordingOptions",
    "Redaction",
]

RECORDERS = ("process", "thread")
CLOSE_TIMEOUT_ENV = "SCALABLE_CLOSE_TIMEOUT"
#: Seconds a session's close may take after the workflow's end: well inside the 30 s
#: Slurm gives a job between SIGTERM and SIGKILL.
DEFAULT_CLOSE_TIMEOUT_S = 10.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    """The cluster a session starts itself (target `local`, or a manifest target of
    provider `slurm`); a session on a scheduler address starts none and ignores them.

    Example::

        from scalable_otel import ClusterOptions, ScalableSession

        cluster = ClusterOptions(memory_limit="4GiB", extra={"local_directory": "/scratch"})
        with ScalableSession(target="local", n_workers=4, cluster=cluster) as session:
            ...

    - `memory_limit`: each local worker's memory limit ("4GiB", bytes, or Dask's
      "auto"); else the manifest target's `memory`, else Dask's default. No variable.
    - `extra`: more keywords for `distributed.LocalCluster` (a local target) or
      `dask_jobqueue.SLURMCluster` (a slurm target), applied last. No variable.
    """

    memory_limit: str | int | float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        limit = self.memory_limit
        if isinstance(limit, bool) or not isinstance(limit, (str, int, float, type(None))):
            raise TypeError(
                "ClusterOptions(memory_limit=...) must be a size such as '4GiB' or a number "
                f"of bytes, not {type(limit).__name__}"
            )
        if not isinstance(self.extra, Mapping):
            raise TypeError(
                "ClusterOptions(extra=...) must be a mapping of cluster keywords, "
                f"not {type(self.extra).__name__}"
            )
        object.__setattr__(self, "extra", dict(self.extra))


@dataclass(frozen=True, kw_only=True)
class RecordingOptions:
    """How a run is recorded: where its OpenTelemetry work happens, and how often.

    Example::

        from scalable_otel import RecordingOptions, ScalableSession

        recording = RecordingOptions(recorder="thread", resource_interval=0.25)
        with ScalableSession(target="local", recording=recording) as session:
            ...

    - `recorder`: "process" (the default: a small child process turns the run's records
      into spans, metrics and lines, away from the scheduler's GIL) or "thread" (a thread
      of this process; always so with `PipelineOptions`, whose objects live here). The
      child's priority is $SCALABLE_RECORDER_NICE (default 10).
    - `flush_interval`: seconds between the workers' batches and the run directory's
      writes (default 0.2); a crash loses at most this much. No variable.
    - `resource_interval`: seconds between each worker's CPU and memory samples
      (default 1.0). No variable.
    - `close_timeout`: seconds the session's close may wait, in all, for the workers'
      last reports, the scheduler and the telemetry process after the workflow's end
      (default 10, inside Slurm's 30 s between SIGTERM and SIGKILL); past it the
      telemetry process is ended and run.json says `telemetry_lost`.
      $SCALABLE_CLOSE_TIMEOUT (a bad value: the default, with a warning).
    """

    recorder: Literal["process", "thread"] = "process"
    flush_interval: float = 0.2
    resource_interval: float = 1.0
    close_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.recorder not in RECORDERS:
            raise ValueError(
                f"RecordingOptions(recorder={self.recorder!r}): use 'process' or 'thread'"
            )
        if self.close_timeout is None:
            object.__setattr__(self, "close_timeout", _close_timeout_from_env())
        for name in ("flush_interval", "resource_interval", "close_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(
                    f"RecordingOptions({name}=...) must be seconds, not {type(value).__name__}"
                )
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"RecordingOptions({name}={value}) must be a positive number")


def _close_timeout_from_env() -> float:
    text = os.environ.get(CLOSE_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_CLOSE_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        logger.warning(
            "scalable-otel: $%s=%r is not a positive number of seconds; using %g",
            CLOSE_TIMEOUT_ENV,
            text[:40],
            DEFAULT_CLOSE_TIMEOUT_S,
        )
        return DEFAULT_CLOSE_TIMEOUT_S
    return value


@dataclass(frozen=True, kw_only=True)
class PipelineOptions:
    """Your own OpenTelemetry components on the run's pipeline, beside its run directory
    and the exporters of `ExportOptions`: they receive every span, metric and log event
    of the run (in-memory ones for your own tests, say).

    Example::

        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from scalable_otel import PipelineOptions, ScalableSession

        exporter = InMemorySpanExporter()
        pipeline = PipelineOptions(span_processors=[SimpleSpanProcessor(exporter)])
        with ScalableSession(target="local", pipeline=pipeline) as session:
            ...

    - `span_processors`: SDK `SpanProcessor`s;
    - `metric_readers`: SDK `MetricReader`s;
    - `log_processors`: SDK `LogRecordProcessor`s (the run's events).

    They are objects of this process, so the run's recorder then works in a thread here
    (`RecordingOptions(recorder="thread")`). No environment variable: the OTel exporters
    chosen by variables are those of `ExportOptions`.
    """

    span_processors: Sequence[Any] = ()
    metric_readers: Sequence[Any] = ()
    log_processors: Sequence[Any] = ()

    def __post_init__(self) -> None:
        for name in ("span_processors", "metric_readers", "log_processors"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
                raise TypeError(
                    f"PipelineOptions({name}=...) takes a list, not {type(value).__name__}"
                )
            object.__setattr__(self, name, tuple(value))

    def as_kwargs(self) -> dict:
        """The three lists, as keywords of the run's recording."""
        return {
            "span_processors": self.span_processors,
            "metric_readers": self.metric_readers,
            "log_processors": self.log_processors,
        }


# The flat keywords of scalable-otel 0.1 and the option object each moved into:
# keyword -> (session keyword, option class, the option's field)
MOVED_KEYWORDS = {
    "memory_limit": ("cluster", "ClusterOptions", "memory_limit"),
    "cluster_kwargs": ("cluster", "ClusterOptions", "extra"),
    "recorder": ("recording", "RecordingOptions", "recorder"),
    "flush_interval": ("recording", "RecordingOptions", "flush_interval"),
    "resource_interval": ("recording", "RecordingOptions", "resource_interval"),
    "span_processors": ("pipeline", "PipelineOptions", "span_processors"),
    "metric_readers": ("pipeline", "PipelineOptions", "metric_readers"),
    "log_processors": ("pipeline", "PipelineOptions", "log_processors"),
    **{
        name: ("exports", "ExportOptions", name)
        for name in (
            "otlp_endpoint",
            "otlp_protocol",
            "otlp_headers",
            "traces_exporter",
            "metrics_exporter",
            "prometheus_port",
            "pushgateway_url",
            "otlp_file",
        )
    },
    "redact_names": ("redaction", "Redaction", "names"),
    "redact_values": ("redaction", "Redaction", "values"),
    "record_args": ("redaction", "Redaction", "record_args"),
}


def moved_keyword_error(caller: str, name: str) -> TypeError:
    """The error for keyword `name` given to `caller`, which does not take it: where it
    moved, or Python's own message for an unknown keyword."""
    moved = MOVED_KEYWORDS.get(name)
    if moved is None:
        return TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    keyword, cls, option = moved
    return TypeError(f"{caller}({name}=...) moved: pass {keyword}={cls}({option}=...)")


def check_option(name: str, value, cls: type):
    """`value` if it is a `cls` (None: the defaults); a TypeError naming `name` else."""
    if value is None:
        return cls()
    if not isinstance(value, cls):
        raise TypeError(
            f"{name}=... must be {cls.__name__}(...) (from scalable_otel), "
            f"not {type(value).__name__}"
        )
    return value
