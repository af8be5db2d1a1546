"""Where the time went: Dask's fine performance metrics of a run (metrics.jsonl).

Dask splits each task's time on its worker into activities (`thread-cpu`, `thread-noncpu`,
`executor`, `deserialize`, `disk-read`, ...); the run's scheduler plugin records the
totals by task prefix, by Dask span (`group`) and, for transfers between workers, for
the cluster. A row is written again each time its total grows: its last line holds it.
"""

from __future__ import annotations

from .. import semconv as sc
from ..rundir import METRICS
from .load import Run

_TEXT_FIELDS = ("scope", "context", "activity", "unit")


def _rows(run: Run) -> list[dict]:
    """Each row's last line (lines of the wrong types read as missing)."""
    last: dict = {}
    for line in run.lines(METRICS):
        if line.get("event") != sc.FINE_METRIC:
            continue
        value = line.get("value")
        if not all(isinstance(line.get(f), str) for f in _TEXT_FIELDS):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        path = line.get("group_path")
        path = tuple(str(p) for p in path) if isinstance(path, list) else None
        prefix, group = line.get("prefix"), line.get("group")
        key = (*(line[f] for f in _TEXT_FIELDS), prefix, group, path)
        last[key] = {**line, "group_path": list(path) if path else None}
    return list(last.values())


def _activities(seconds: dict, total: float) -> list[dict]:
    """{activity: seconds} as rows, largest first, each with its share of `total`."""
    return [
        {"activity": a, "seconds": round(s, 6), "share": round(s / total, 4) if total else None}
        for a, s in sorted(seconds.items(), key=lambda item: (-item[1], item[0]))
    ]


def _add(table: dict, name, activity: str, value: float) -> None:
    table.setdefault(name, {})
    table[name][activity] = table[name].get(activity, 0.0) + value


def fine_metrics(run: Run) -> dict:
    """Where the run's task time went, by Dask's fine performance metrics.

    `total_s`: the seconds Dask accounted for in executing the run's tasks;
    `activities`: those seconds by activity, with their share of the total; `prefixes`
    and `groups` (Dask spans: `group` its id, null for Dask's default span, and
    `group_path` its names): the same per task prefix and per span, largest first;
    `transfers`: the cluster's seconds in other contexts (`gather-dep`, `get-data`), by
    context and activity. All empty for a run without metrics.jsonl lines (an older run,
    or a Dask without these metrics).
    """
    overall: dict = {}
    prefixes: dict = {}
    groups: dict = {}
    paths: dict = {}
    transfers: dict = {}
    for row in _rows(run):
        if row["unit"] != "seconds":
            continue
        value, activity = float(row["value"]), row["activity"]
        if row["scope"] == sc.SCOPE_PREFIX and row["context"] == "execute":
            overall[activity] = overall.get(activity, 0.0) + value
            _add(prefixes, str(row.get("prefix")), activity, value)
        elif row["scope"] == sc.SCOPE_GROUP:
            group = row.get("group")
            paths[group] = row.get("group_path")
            _add(groups, group, activity, value)
        elif row["scope"] == sc.SCOPE_CLUSTER:
            _add(transfers, row["context"], activity, value)
    total = sum(overall.values())

    def entries(table: dict, name_fields) -> list[dict]:
        out = []
        for name, seconds in table.items():
            subtotal = sum(seconds.values())
            out.append(
                {
                    **name_fields(name),
                    "seconds": round(subtotal, 6),
                    "share": round(subtotal / total, 4) if total else None,
                    "activities": _activities(seconds, subtotal),
                }
            )
        return sorted(out, key=lambda e: -e["seconds"])

    return {
        "total_s": round(total, 6),
        "activities": _activities(overall, total),
        "prefixes": entries(prefixes, lambda p: {"prefix": p}),
        "groups": entries(groups, lambda g: {"group": g, "group_path": paths.get(g)}),
        "transfers": [
            {"context": context, "activity": a, "seconds": round(s, 6)}
            for context, seconds in sorted(transfers.items())
            for a, s in sorted(seconds.items(), key=lambda item: -item[1])
        ],
    }


def group_name(entry: dict) -> str:
    """A group's names joined by " / ", or "(default span)"."""
    path = entry.get("group_path")
    return " / ".join(path) if path else "(default span)"


def _share(value) -> str:
    return f"{100 * value:5.1f}%" if value is not None else "   n/a"


def format_fine_metrics(data: dict) -> str:
    """The "Where the time went" section of `scalable report --time-breakdown`."""
    lines = ["Where the time went (Dask's fine performance metrics)"]
    if not data["activities"]:
        lines.append("  No fine performance metrics in this run (metrics.jsonl is empty).")
        return "\n".join(lines)
    lines.append(f"  Task execution, {data['total_s']:.3f}s in all:")
    width = max(len(a["activity"]) for a in data["activities"])
    for a in data["activities"]:
        lines.append(f"    {a['activity']:<{width}}  {a['seconds']:10.3f}s  {_share(a['share'])}")
    for title, entries, name in (
        ("By task prefix:", data["prefixes"], lambda e: e["prefix"]),
        ("By span:", data["groups"], group_name),
    ):
        if not entries:
            continue
        lines.append(f"  {title}")
        for e in entries:
            top = ", ".join(
                f"{a['activity']} {100 * a['share']:.0f}%"
                for a in e["activities"][:3]
                if a["share"] is not None
            )
            lines.append(f"    {name(e)}: {e['seconds']:.3f}s ({top})")
    if data["transfers"]:
        lines.append("  Between workers (the cluster's):")
        for t in data["transfers"]:
            lines.append(f"    {t['context']} {t['activity']}: {t['seconds']:.3f}s")
    return "\n".join(lines)
