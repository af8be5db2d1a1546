"""The "Where the time went" section of the HTML page: Dask's fine performance metrics
(`analysis.fine_metrics.fine_metrics`, as `scalable report --time-breakdown` prints them).
Left out of a page whose run has none."""

from __future__ import annotations

import html

from ..fine_metrics import group_name
from ..report import seconds


def _share(value) -> str:
    return f"{100 * value:.1f}%" if value is not None else "n/a"


def _meter(share) -> str:
    width = 100 * share if share is not None else 0.0
    return f'<span class="meter"><span style="width:{width:.1f}%"></span></span>{_share(share)}'


def time_breakdown_section(data: dict | None) -> str:
    """The section: overall activities, then one row per prefix and per span."""
    if not data or not data["activities"]:
        return ""
    e = html.escape
    out = [
        '<section id="time-breakdown-section"><h2>Where the time went</h2>',
        '<p class="hint">Dask\'s fine performance metrics: the time workers spent executing '
        f"the run's tasks ({e(seconds(data['total_s']))} in all), by activity.</p>",
        '<table class="data" id="time-breakdown-table"><thead><tr><th>Activity</th>'
        "<th>Time</th><th>Share</th></tr></thead><tbody>",
    ]
    for a in data["activities"]:
        out.append(
            f'<tr><td class="name">{e(a["activity"])}</td><td>{e(seconds(a["seconds"]))}</td>'
            f"<td>{_meter(a['share'])}</td></tr>"
        )
    out.append("</tbody></table>")
    for table_id, title, entries, name in (
        ("time-by-prefix-table", "Task prefix", data["prefixes"], lambda x: x["prefix"]),
        ("time-by-span-table", "Span", data["groups"], group_name),
    ):
        if not entries:
            continue
        out.append(
            f'<table class="data" id="{table_id}"><thead><tr><th>{title}</th><th>Time</th>'
            "<th>Share</th><th>Activities</th></tr></thead><tbody>"
        )
        for x in entries:
            activities = ", ".join(f"{a['activity']} {_share(a['share'])}" for a in x["activities"])
            out.append(
                f'<tr><td class="name">{e(str(name(x)))}</td><td>{e(seconds(x["seconds"]))}'
                f"</td><td>{_meter(x['share'])}</td><td>{e(activities)}</td></tr>"
            )
        out.append("</tbody></table>")
    out.append("</section>")
    return "\n".join(out)
