"""Checks shared by the tests of re-executions: what every run's files must say of the
executions they record."""

from collections import Counter

import orjson

from scalable_otel.exporters.otlp_json import decode_otlp_json
from tests.conftest import events


def trace_spans(run_dir) -> list:
    """Every span of traces.otlp.jsonl (a span is written there only once it ended)."""
    return [
        span
        for line in (run_dir / "traces.otlp.jsonl").read_bytes().splitlines()
        for resource in decode_otlp_json(line).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


def check_every_execution_recorded(run_dir) -> dict:
    """What holds for every run: the counts are the lines, every span a line names has
    ended, and no two executions share a span. Returns the task lines by key."""
    lines = events(run_dir)
    run = orjson.loads((run_dir / "run.json").read_bytes())
    count = Counter(e["event"] for e in lines)
    assert run["tasks_completed"] == count["task_completed"]
    assert run["tasks_failed"] == count["task_failed"]
    assert run["tasks_submitted"] == count["task_submitted"]
    assert run["tasks_cancelled"] == count["task_cancelled"]
    ended = {span.span_id.hex() for span in trace_spans(run_dir)}
    started = [e["span_id"] for e in lines if e["event"] == "task_started"]
    lives = [e["span_id"] for e in lines if e["event"] == "task_submitted"]
    assert len(set(started)) == len(started) and len(set(lives)) == len(lives)
    assert not set(started + lives) - ended, "a span was left open"
    # one final line for each life of a key, under its span
    finals = [e for e in lines if e["event"] in ("task_completed", "task_failed", "task_cancelled")]
    assert sorted(e["span_id"] for e in finals) == sorted(
        e["span_id"] for e in lines if e["event"] == "task_submitted"
    )
    by_key: dict = {}
    for e in lines:
        by_key.setdefault(e["key"], []).append(e)
    return by_key


def executions(lines, event):
    """(attempt, reason) of each `event` line."""
    return [(e["attempt"], e.get("reason")) for e in lines if e["event"] == event]
