"""A run's figures by group: the `distributed.span` blocks its tasks were submitted in.

A group is a path of block names, outermost first (tasks.jsonl's `group_path`); its
figures count its own tasks and those of the blocks nested in it, so
`calibration` holds `calibration / region-3`. Blocks of one path (a block opened twice,
in a loop) are one group: paths, unlike Dask's span ids, are the same from run to run,
so runs compare by them. Tasks outside any block are the run's own (`path` []), shown
after the groups.
"""

from __future__ import annotations

from .. import semconv as sc
from ..rundir import TASKS
from .columns import epoch_us_sql
from .load import Run

SEPARATOR = " / "

_ENDS = f"('{sc.TASK_COMPLETED}', '{sc.TASK_FAILED}')"
# every prefix of a task line's path: the line counts in its group and the enclosing ones
_PREFIXES = f"""
SELECT event, key, "group", duration_s, {epoch_us_sql()} AS us, group_path[1:depth] AS path
FROM (SELECT *, unnest(range(1, len(group_path) + 1)) AS depth FROM {{t}}
      WHERE len(group_path) > 0)
"""
_OUTSIDE = f"""
SELECT event, key, "group", duration_s, {epoch_us_sql()} AS us, []::VARCHAR[] AS path
FROM {{t}} WHERE event IS NOT NULL AND (group_path IS NULL OR len(group_path) = 0)
"""
GROUP_FIGURES = f"""
SELECT path,
    count(*) FILTER (WHERE event = '{sc.TASK_SUBMITTED}'),
    count(*) FILTER (WHERE event = '{sc.TASK_COMPLETED}'),
    count(*) FILTER (WHERE event = '{sc.TASK_FAILED}'),
    coalesce(sum(duration_s) FILTER (WHERE event IN {_ENDS}), 0),
    median(duration_s) FILTER (WHERE event = '{sc.TASK_COMPLETED}'),
    min(us) FILTER (WHERE event = '{sc.TASK_STARTED}'),
    max(us) FILTER (WHERE event IN {_ENDS}),
    min(us) FILTER (WHERE event = '{sc.TASK_SUBMITTED}'),
    count(DISTINCT "group")
FROM ({_PREFIXES} UNION ALL {_OUTSIDE})
GROUP BY path
"""
FIELDS = ["event", "key", "group", "group_path", "duration_s", "timestamp"]
#: SQL for the keys of the tasks in a group (its own and its nested blocks'), over a run's
#: tasks.jsonl as `{g}`, with two parameters: the group's path, twice.
KEYS_IN_GROUP = "SELECT DISTINCT key FROM {g} WHERE group_path[1:len(?::VARCHAR[])] = ?::VARCHAR[]"


def label(path) -> str:
    """A group's path as one name: `calibration / region-3`; `(no group)` for []."""
    return SEPARATOR.join(path) if path else "(no group)"


def parse_path(text: str) -> list[str]:
    """A path as the command line gives it (`calibration/region-3` or
    `calibration / region-3`): its names."""
    return [part.strip() for part in text.replace(SEPARATOR, "/").split("/") if part.strip()]


def has_groups(run: Run) -> bool:
    """Whether any task of the run was submitted in a `distributed.span` block."""
    rows = run.file(TASKS, ["event", "group_path"]).query(
        "SELECT count(*) FROM {t} WHERE len(group_path) > 0"
    )
    return bool(rows[0][0])


def run_groups(run: Run) -> list[dict]:
    """The run's groups, in tree order (each after its enclosing group, siblings by their
    first submission), then the tasks outside any group; [] for a run without groups.

    Each: `path` (names, outermost first), `label`, `depth` (1 for a top-level block),
    `blocks` (Dask spans of this path), `submitted`, `completed`, `failed` (task lines),
    `busy_s` (the durations of ended tasks, as the report's busy time), `share` (of the
    run's busy time), `median_duration_s` (of completed tasks), `wall_s` (from the first
    task start to the last task end in it).
    """
    rows = run.file(TASKS, FIELDS).query(GROUP_FIGURES)
    if not any(row[0] for row in rows):
        return []
    total = sum(row[4] for row in rows if not row[0]) + sum(
        row[4] for row in rows if row[0] and len(row[0]) == 1
    )
    first = {tuple(row[0]): row[8] if row[8] is not None else 0 for row in rows}
    out = []
    for path, submitted, completed, failed, busy, median, start, end, _first, blocks in rows:
        wall = (end - start) / 1e6 if start is not None and end is not None else None
        out.append(
            {
                "path": list(path),
                "label": label(path),
                "depth": len(path),
                "blocks": blocks,
                "submitted": submitted,
                "completed": completed,
                "failed": failed,
                "busy_s": busy,
                "share": busy / total if total else None,
                "median_duration_s": median,
                "wall_s": max(wall, 0.0) if wall is not None else None,
            }
        )

    def order(group):
        path = tuple(group["path"])
        if not path:
            return (1,)
        return (0, *((first.get(path[: i + 1], 0), path[i]) for i in range(len(path))))

    return sorted(out, key=order)


_TASK_NAMES = f"""
SELECT group_path, list(DISTINCT task ORDER BY task) FILTER (WHERE task IS NOT NULL)
FROM {{t}} WHERE event = '{sc.TASK_SUBMITTED}'
GROUP BY group_path ORDER BY min(timestamp), group_path
"""


def group_task_names(run: Run) -> list[dict]:
    """The task names submitted in each block itself (nested blocks apart), blocks in
    the order of their first submission, then those outside any (`label` `(no group)`):
    `{"path", "label", "tasks"}`. The HTML timeline's legend has a row for each."""
    rows = run.file(TASKS, ["event", "task", "group_path", "timestamp"]).query(_TASK_NAMES)
    groups = [{"path": list(p or []), "label": label(p), "tasks": t or []} for p, t in rows]
    return sorted(groups, key=lambda g: not g["path"])


def compare_groups(a: list[dict], b: list[dict]) -> list[dict]:
    """Groups of two runs (`run_groups` of each) side by side, matched by path, in B's
    order then A's groups that B has not: `path`, `label`, `depth`, and per figure
    (`submitted`, `failed`, `busy_s`, `median_duration_s`, `wall_s`) `{"a", "b",
    "change_pct"}`; [] when neither run has groups."""
    by_a = {tuple(g["path"]): g for g in a}
    by_b = {tuple(g["path"]): g for g in b}
    order = list(by_b) + [p for p in by_a if p not in by_b]
    rows = []
    for path in order:
        ga, gb = by_a.get(path, {}), by_b.get(path, {})
        row = {"path": list(path), "label": label(path), "depth": len(path)}
        for figure in ("submitted", "failed", "busy_s", "median_duration_s", "wall_s"):
            va, vb = ga.get(figure), gb.get(figure)
            pct = 100.0 * (vb - va) / va if va and vb is not None else None
            row[figure] = {"a": va, "b": vb, "change_pct": pct}
        rows.append(row)
    return rows
