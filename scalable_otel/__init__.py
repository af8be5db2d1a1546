"""scalable-otel: OpenTelemetry-native telemetry for Dask task workflows.

from scalable_otel import ScalableSession, cacheable

with ScalableSession(target="local", n_workers=2) as session:
    results = session.gather(session.map(run_simulation, range(100)))

Rare settings are option objects: `ClusterOptions`, `ExportOptions`, `Redaction`,
`PipelineOptions` and `RecordingOptions` (`ScalableSession(exports=ExportOptions(...))`).

The answers the `scalable` CLI prints come from functions returning data:
`load_run`, `report`, `compare`, `list_runs`, `trends` and `advise`.
"""

from .version import __version__

__all__ = [
    "ScalableSession",
    "ClusterOptions",
    "ExportOptions",
    "PipelineOptions",
    "RecordingOptions",
    "Redaction",
    "DaskInstrumentor",
    "cacheable",
    "Manifest",
    "ManifestError",
    "telemetry_disabled",
    "load_run",
    "report",
    "compare",
    "list_runs",
    "trends",
    "advise",
    "__version__",
]

# Names load on first use, so that a process needing one part (the telemetry process,
# a worker unpickling a cached function) does not import Dask's client for the rest.
_LAZY = {
    "ScalableSession": ".session",
    "ClusterOptions": ".options",
    "ExportOptions": ".exporters.settings",
    "PipelineOptions": ".options",
    "RecordingOptions": ".options",
    "Redaction": ".args",
    "DaskInstrumentor": ".instrumentor",
    "cacheable": ".cache",
    "Manifest": ".manifest",
    "ManifestError": ".manifest",
    "telemetry_disabled": ".telemetry",
    "load_run": ".analysis.load",
    "report": ".analysis.report",
    "compare": ".analysis.compare",
    "list_runs": ".analysis.runs",
    "trends": ".analysis.trends",
    "advise": ".analysis.advise",
}
_RENAMED = {"list_runs": "list_run_summaries"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'scalable_otel' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
