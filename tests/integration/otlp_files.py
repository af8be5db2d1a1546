"""What a Collector's `file` exporter wrote (OTLP JSON, one export request a line), read
back as plain Python: log records and spans with their attributes decoded."""

from __future__ import annotations

from pathlib import Path

from tests.integration.go_servers import attributes, read_otlp_json_lines
from tests.integration.go_servers import log_records as raw_log_records


def log_records(path: Path) -> list[dict]:
    """Every log record in the file, its attributes decoded and its resource's beside."""
    return [
        {**record, "attributes": attributes(record.get("attributes", []))}
        for record in raw_log_records(path)
    ]


def span_ids(path: Path) -> list[str]:
    """The span id of every span in the file (a span sent twice is there twice)."""
    ids = []
    for request in read_otlp_json_lines(path):
        for resource_spans in request.get("resourceSpans", []):
            for scope_spans in resource_spans.get("scopeSpans", []):
                ids.extend(span["spanId"] for span in scope_spans.get("spans", []))
    return ids


def collector_to_files(folder: Path):
    """A Collector config (for `start_collector`): OTLP in on the `grpc` and `http` ports,
    each signal into its own file in `folder` (traces.json, metrics.json, logs.json),
    appended across restarts."""
    from tests.integration.go_servers import otlp_receiver

    def config(ports: dict[str, int]) -> dict:
        exporters = {
            f"file/{signal}": {
                "path": str(folder / f"{signal}.json"),
                "append": True,
                "flush_interval": "100ms",
            }
            for signal in ("traces", "metrics", "logs")
        }
        return {
            "receivers": otlp_receiver(ports),
            "exporters": exporters,
            "service": {
                "pipelines": {
                    signal: {"receivers": ["otlp"], "exporters": [f"file/{signal}"]}
                    for signal in ("traces", "metrics", "logs")
                }
            },
        }

    return config
