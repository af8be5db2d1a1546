"""Run directories written by the Scalable workflow tool's own 2.0 betas, read as ours.

Those betas write `.scalable/runs/run-…/` too, with other names:

- run.json `started_at`, `finished_at`: `start_time`, `end_time` (and `duration_s`);
- run.json `target_name`, `provider_name`: `target`, `provider`;
- run.json `status` `succeeded`/`success`: `completed` (other values kept);
- summary.json `total_tasks`, `succeeded` (or `completed`), `failed`:
  `tasks_submitted`, `tasks_completed`, `tasks_failed`;
- tasks.jsonl `state` `submitted`, `running`, `succeeded`, `failed`, `cancelled`:
  `event` `task_submitted`, `task_started`, `task_completed`, `task_failed`,
  `task_cancelled`; a line with no state keeps its `event_type`;
- tasks.jsonl `task_name`: `task`; `duration` or `duration_s`: `duration_s`;
- cache.jsonl `hit` (true/false): `result` `hit`/`miss`.

What such a run cannot give: its workers wrote no samples (no workers.jsonl or
resources.jsonl), so worker utilization, peak workers, cost from worker uptime and
resource advice are not available; its task durations ran from submit to the client's
callback (queue time included) and its timestamps have whole-second resolution.
`LIMITS` says so in the report.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from .. import semconv as sc

FORMAT = "scalable-2.0-beta"
LIMITS = (
    "a Scalable 2.0 beta run: it has no worker or resource samples (no utilization, peak "
    "workers, uptime cost or resource advice), and its task durations include queue time"
)
STATES = {
    "submitted": sc.TASK_SUBMITTED,
    "running": sc.TASK_STARTED,
    "succeeded": sc.TASK_COMPLETED,
    "failed": sc.TASK_FAILED,
    "cancelled": sc.TASK_CANCELLED,
}


def _read(path: Path) -> dict:
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def is_beta(meta: dict) -> bool:
    """Whether a run.json is the Scalable 2.0 beta's (its names, not ours)."""
    return "started_at" in meta and "start_time" not in meta


def beta_meta(meta: dict, run_dir: Path) -> dict:
    """A beta's run.json (and summary.json) under our names; the original is kept."""
    from ..rundir import parse_iso

    summary = _read(Path(run_dir) / "summary.json")
    started, ended = meta.get("started_at"), meta.get("finished_at")
    t0, t1 = parse_iso(started), parse_iso(ended)
    status = meta.get("status") or summary.get("status")
    status = status or (sc.RUN_COMPLETED if ended else sc.RUN_RUNNING)
    if status in ("succeeded", "success", "done"):
        status = sc.RUN_COMPLETED
    mapped = {
        "run_id": meta.get("run_id") or Path(run_dir).name,
        "project": meta.get("project") or meta.get("project_name"),
        "status": status,
        "start_time": started,
        "end_time": ended,
        "duration_s": meta.get("duration_s") or (t1 - t0 if t0 and t1 else None),
        "target": meta.get("target_name") or meta.get("target"),
        "provider": meta.get("provider_name") or meta.get("provider"),
        "format": FORMAT,
        "original": meta,
    }
    counts = {
        "tasks_submitted": ("total_tasks", "tasks_submitted", "submitted"),
        "tasks_completed": ("succeeded", "completed", "tasks_completed"),
        "tasks_failed": ("failed", "tasks_failed"),
    }
    for ours, theirs in counts.items():
        value = next((summary[k] for k in theirs if isinstance(summary.get(k), int)), None)
        if value is not None:
            mapped[ours] = value
    return mapped


def beta_line(name: str, line: dict) -> dict:
    """One parsed line of a beta's tasks.jsonl or cache.jsonl under our names, as
    `tasks_relation` and `cache_relation` read it in SQL (other files are kept as they are).

    >>> beta_line("tasks.jsonl", {"state": "succeeded", "task_name": "sim", "duration": 4.0})
    {'timestamp': None, 'event': 'task_completed', 'task': 'sim', 'key': None, 'duration_s': 4.0}
    """
    if name == "tasks.jsonl":
        state, kind = line.get("state"), line.get("event_type")
        if isinstance(state, str):
            event = STATES.get(state, f"task_{state}")
        elif line.get("timestamp") is None and line.get("task_name") is None and kind is None:
            event = None
        else:
            event = kind if isinstance(kind, str) else "other"
        duration = line.get("duration_s")
        return {
            "timestamp": line.get("timestamp"),
            "event": event,
            "task": line.get("task_name"),
            "key": line.get("key") if line.get("key") is not None else line.get("task_id"),
            "duration_s": duration if duration is not None else line.get("duration"),
        }
    if name == "cache.jsonl":
        hit = line.get("hit")
        known = isinstance(hit, bool)
        return {
            "timestamp": line.get("timestamp"),
            "event": sc.CACHE_LOOKUP if known else None,
            "function": line.get("function"),
            "task": line.get("task_name"),
            "result": ("hit" if hit else "miss") if known else None,
        }
    return line


def tasks_relation(path: str) -> str:
    """SQL for a beta's tasks.jsonl with our column names (`path` already a SQL literal)."""
    states = " ".join(f"WHEN '{theirs}' THEN '{ours}'" for theirs, ours in STATES.items())
    fields = (
        "{'timestamp': 'VARCHAR', 'state': 'VARCHAR', 'task_name': 'VARCHAR', "
        "'event_type': 'VARCHAR', 'key': 'VARCHAR', 'task_id': 'VARCHAR', "
        "'duration': 'DOUBLE', 'duration_s': 'DOUBLE'}"
    )
    return (
        "(SELECT timestamp, "
        # a line that did not parse is all NULL; one without a state is another event
        "CASE WHEN state IS NOT NULL THEN (CASE state "
        f"{states} ELSE 'task_' || state END) "
        "WHEN timestamp IS NULL AND task_name IS NULL AND event_type IS NULL THEN NULL "
        "ELSE coalesce(event_type, 'other') END AS event, task_name AS task, "
        "coalesce(key, task_id) AS key, "
        "NULL::VARCHAR AS span_id, NULL::VARCHAR AS worker, NULL::BIGINT AS attempt, "
        "coalesce(duration_s, duration) AS duration_s, NULL::DOUBLE AS queue_wait_s, "
        'NULL::JSON AS args, NULL::VARCHAR AS "group", NULL::VARCHAR[] AS group_path '
        f"FROM read_json({path}, format='newline_delimited', columns={fields}, "
        "records=true, ignore_errors=true))"
    )


def cache_relation(path: str) -> str:
    """SQL for a beta's cache.jsonl with our column names."""
    fields = (
        "{'timestamp': 'VARCHAR', 'hit': 'BOOLEAN', 'function': 'VARCHAR', "
        "'task_name': 'VARCHAR', 'event_type': 'VARCHAR'}"
    )
    return (
        "(SELECT timestamp, CASE WHEN hit IS NULL THEN NULL ELSE 'cache_lookup' END AS event, "
        "function, task_name AS task, NULL::VARCHAR AS span_id, "
        "CASE WHEN hit THEN 'hit' WHEN NOT hit THEN 'miss' END AS result, "
        "NULL::DOUBLE AS lookup_s, NULL::DOUBLE AS saved_s, "
        "NULL::VARCHAR AS miss_reason, NULL::VARCHAR[] AS miss_arguments "
        f"FROM read_json({path}, format='newline_delimited', columns={fields}, "
        "records=true, ignore_errors=true))"
    )
