"""The critical path on the HTML page: its table, and which timeline bars are on it.

The path is `analysis.critical_path.critical_path(run)`, as `scalable report
--critical-path` prints it. It reads every task event, so for a run of more than
`MAX_PATH_ATTEMPTS` attempts the page leaves it out unless the run report passed in
already holds it under `critical_path` (what `scalable report --critical-path --html`
passes).
"""

from __future__ import annotations

import html

from ..critical_path import critical_path, summary_line
from ..report import seconds

# as many as the timeline draws (figures.MAX_BARS): up to it, every link has its bar
MAX_PATH_ATTEMPTS = 20_000


def critical_figure(run, summary: dict, total_attempts: int) -> dict | None:
    """The run's critical path as `CriticalPath.to_dict()`, or None when left out."""
    if "critical_path" in summary:
        return summary["critical_path"]
    if total_attempts > MAX_PATH_ATTEMPTS:
        return None
    return critical_path(run).to_dict()


def path_bars(path: dict | None) -> list[list]:
    """[key, attempt] of each link, first to last (the bars the timeline highlights)."""
    if not path or not path["available"]:
        return []
    return [[link["key"], link["attempt"]] for link in path["links"]]


def critical_section(path: dict | None, start_us: int | None) -> str:
    """The page's section: the summary line and one row per link."""
    e = html.escape
    out = ['<section id="critical-path-section"><h2>Critical path</h2>']
    if path is None:
        out.append(
            f'<p class="empty">Left out for a run of more than {MAX_PATH_ATTEMPTS:,} attempts: '
            "<code>scalable report --critical-path --html FILE</code> adds it.</p></section>"
        )
        return "\n".join(out)
    if not path["available"]:
        out.append(f'<p class="empty">Not available: {e(path["reason"])}.</p></section>')
        return "\n".join(out)
    out.append(
        '<p class="hint">The chain of task attempts that set the run\'s duration, walked '
        "back from the attempt that ended last through whichever of its dependencies ended "
        "last, or the attempt that held its worker. Its bars are outlined on the timeline.</p>"
    )
    out.append(f'<p id="critical-path-summary">{e(summary_line(path["summary"]))}</p>')
    out.append(
        '<table class="data" id="critical-path-table"><thead><tr><th>Start</th><th>Task</th>'
        "<th>Key</th><th>Worker</th><th>After</th><th>Queued for a worker</th>"
        "<th>Dependencies, transfer</th><th>Execution</th></tr></thead><tbody>"
    )
    origin = start_us / 1e6 if start_us is not None else None
    for link in path["links"]:
        at = "–" if origin is None else f"+{link['start'] - origin:.3f} s"
        after = "(start)" if link["linked_by"] is None else link["after"]
        if link["linked_by"] not in (None, "dependency"):
            after = f"{after} ({link['linked_by']})"
        cells = [
            f'<td class="num">{e(at)}</td>',
            f'<td class="name">{e(link["task"] or "?")}</td>',
            f"<td><code>{e(link['key'])}</code></td>",
            f"<td>{e(link['worker'] or '–')}</td>",
            f"<td><code>{e(after)}</code></td>",
            f'<td class="num">{e(seconds(link["worker_wait_s"]))}</td>',
            f'<td class="num">{e(seconds(link["dependency_wait_s"]))}</td>',
            f'<td class="num">{e(seconds(link["execution_s"]))}</td>',
        ]
        out.append('<tr class="critical-link">' + "".join(cells) + "</tr>")
    out.append("</tbody></table></section>")
    return "\n".join(out)
