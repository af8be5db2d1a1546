"""The HTML report's groups section: a row per `distributed.span` block of the run
(`analysis.groups.run_groups`, the figures of `scalable report`'s Groups section)."""

from __future__ import annotations

import html

from ..report import seconds


def groups_section(groups: list[dict]) -> str:
    """The section, or "" for a run without groups."""
    if not groups:
        return ""
    e = html.escape
    out = [
        '<section id="groups-section"><h2>Groups</h2>',
        '<p class="hint">Tasks by the <code>distributed.span</code> block they were submitted '
        "in; a block's figures include those of the blocks nested in it. Busy is the "
        "execution time of its ended tasks, share its part of the run's; wall is from its "
        "first task start to its last task end.</p>",
        '<table class="data" id="groups-table"><thead><tr><th>Group</th><th>Tasks</th>'
        "<th>Completed</th><th>Failed</th><th>Busy</th><th>Share</th><th>Median</th>"
        "<th>Wall</th></tr></thead><tbody>",
    ]
    for g in groups:
        name = g["path"][-1] if g["path"] else g["label"]
        indent = max(g["depth"] - 1, 0)
        share = "–" if g["share"] is None else f"{100 * g['share']:.0f}%"
        cells = [
            g["submitted"],
            g["completed"],
            g["failed"],
            seconds(g["busy_s"]),
            share,
            seconds(g["median_duration_s"]),
            seconds(g["wall_s"]),
        ]
        failed = ' class="bad"' if g["failed"] else ""
        out.append(
            f'<tr><td class="name" style="padding-left:{0.4 + 1.2 * indent:.1f}em" '
            f'title="{e(g["label"])}">{e(name)}</td>'
            + "".join(
                f"<td{failed if i == 2 else ''}>{e(str(c))}</td>" for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    out.append("</tbody></table></section>")
    return "\n".join(out)
