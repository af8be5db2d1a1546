"""The report page: the figures as escaped HTML, with the page's own script and style.

`report.js` and `report.css` are package data, read once. The script is allowed by its
SHA-256 hash in the page's Content-Security-Policy, so nothing else can run.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import os
from datetime import datetime
from importlib import resources
from pathlib import Path

from ... import semconv as sc
from ...rundir import make_private_dirs, replaced_atomically
from ...version import __version__
from ..energy import format_energy
from .common import epoch_us, integer, number, utc
from .critical import critical_section
from .figures import MAX_BARS, MAX_TASK_NAMES, figures, payload
from .groups import groups_section
from .time_breakdown import time_breakdown_section

_STATUS_CLASSES = {*sc.RUN_ENDED, sc.RUN_RUNNING, sc.RUN_CRASHED}


@functools.cache
def asset(name: str) -> str:
    """The text of one of the page's files shipped with the package (`report.js`, ...)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _e(value) -> str:
    """Escape for HTML text and quoted attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0 s"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    if value < 60:
        return f"{value:.2f} s"
    minutes, secs = divmod(value, 60)
    if minutes < 60:
        return f"{int(minutes)} min {secs:04.1f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes):02d} min"


def _fmt_time(stamp: datetime | None) -> str:
    return "–" if stamp is None else stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def json_for_script(value) -> str:
    """JSON text that is safe inside a <script> element: no <, > or & at all."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _notes(run, fig: dict) -> list[str]:
    meta = run.meta or {}
    notes = []
    if run.status == sc.RUN_RUNNING:
        notes.append(
            "run.json has no end: the run is still in progress, or its process was killed "
            "before it could finish. The page shows what was recorded up to now."
        )
    if run.status == sc.RUN_CRASHED:
        notes.append(
            "The run's process ended without finishing the run: the page shows what was "
            "recorded before it stopped."
        )
    if meta.get("telemetry_lost"):
        notes.append("The session's telemetry process ended early: figures are incomplete.")
    dropped = integer(meta.get("telemetry_lines_dropped"), 0)
    if dropped:
        notes.append(f"{dropped} telemetry lines could not be written.")
    skipped = fig["skipped_lines"]
    if skipped:
        parts = ", ".join(f"{n} in {f}" for f, n in sorted(skipped.items()))
        notes.append(f"Skipped unreadable lines ({parts}).")
    return notes


def _header(run, fig: dict) -> str:
    meta = run.meta or {}
    status = run.status or sc.RUN_UNKNOWN
    status_class = status if status in _STATUS_CLASSES else sc.RUN_UNKNOWN
    duration = number(meta.get("duration_s"))
    if duration is not None:
        duration_text = _fmt_seconds(duration)
    elif fig["start_us"] is not None:
        duration_text = f"{_fmt_seconds(fig['t_end'])} recorded (no end in run.json)"
    else:
        duration_text = "–"
    counts, cache = fig["counts"], fig["cache"]
    hit_rate = f"{100 * cache['hits'] / cache['lookups']:.0f}%" if cache["lookups"] else "–"
    cards = [
        ("Submitted", counts["submitted"], ""),
        ("Completed", counts["completed"], "ok"),
        ("Failed", counts["failed"], "bad"),
        ("Cancelled", sum(s["cancelled"] for s in fig["stats"]), ""),
        ("Attempts", fig["total_attempts"], ""),
        ("Workers", len([w for w in fig["workers"] if w.get("address")]), ""),
        ("Cache hit rate", hit_rate, ""),
    ]
    start = utc(epoch_us(meta.get("start_time"))) or utc(fig["start_us"])
    facts = [
        ("Project", meta.get("project")),
        ("Target", meta.get("target")),
        ("Provider", meta.get("provider")),
        ("Start", _fmt_time(start)),
        ("End", _fmt_time(utc(epoch_us(meta.get("end_time"))))),
        ("Duration", duration_text),
    ]
    if fig.get("energy"):
        facts.append(("Energy", format_energy(fig["energy"])))
    out = [
        '<header class="page-header">',
        '<div class="title-row"><h1>Run report</h1>',
        f'<span class="status status-{status_class}" id="run-status">{_e(status)}</span></div>',
        f'<p class="run-id" id="run-id">{_e(run.run_id)}</p>',
        '<dl class="facts">',
    ]
    for label, value in facts:
        out.append(
            f"<div><dt>{_e(label)}</dt><dd>{_e(value if value is not None else '–')}</dd></div>"
        )
    out.append("</dl>")
    out.append('<div class="cards" id="header-counts">')
    for label, value, tone in cards:
        cls = f"card {tone}".strip() if value not in (0, "–") else "card"
        out.append(f'<div class="{cls}"><span class="n">{_e(value)}</span>{_e(label)}</div>')
    out.append("</div>")
    for note in _notes(run, fig):
        out.append(f'<p class="note">{_e(note)}</p>')
    out.append("</header>")
    return "\n".join(out)


def _task_table(fig: dict) -> str:
    stats = fig["stats"]
    if not stats:
        return ""
    out = [
        '<table class="data" id="task-table"><thead><tr><th>Task</th><th>Attempts</th>'
        "<th>Completed</th><th>Failed</th><th>Cancelled</th><th>Total</th><th>Mean</th>"
        "<th>Median</th><th>p95</th><th>Max</th></tr></thead><tbody>"
    ]
    for s in stats[:MAX_TASK_NAMES]:
        cells = [
            s["attempts"],
            s["completed"],
            s["failed"],
            s["cancelled"],
            _fmt_seconds(s["total"]) if s["n"] else "–",
            _fmt_seconds(s.get("mean")),
            _fmt_seconds(s.get("median")),
            _fmt_seconds(s.get("p95")),
            _fmt_seconds(s.get("max")),
        ]
        failed = ' class="bad"' if s["failed"] else ""
        out.append(
            f'<tr><td class="name">{_e(s["task"])}</td>'
            + "".join(f"<td{failed if i == 2 else ''}>{_e(c)}</td>" for i, c in enumerate(cells))
            + "</tr>"
        )
    out.append("</tbody></table>")
    hidden = len(stats) - MAX_TASK_NAMES
    if hidden > 0:
        out.append(
            f'<p class="note">{hidden} more task names with less total time are not shown.</p>'
        )
    return "\n".join(out)


def _worker_label(fig: dict, address: str | None) -> str:
    if not address:
        return "–"
    for w in fig["workers"]:
        if w.get("address") == address and w.get("name") is not None:
            return f"{w['name']} ({address})"
    return address


def _failures_section(fig: dict) -> str:
    rows, total = fig["failures"], fig["failures_total"]
    out = [f'<section id="failures-section"><h2>Failures <small>({total})</small></h2>']
    if not rows:
        out.append('<p class="empty">No task failed.</p></section>')
        return "\n".join(out)
    out.append(
        '<table class="data" id="failures-table"><thead><tr><th>Time</th><th>Task</th>'
        "<th>Key</th><th>Error</th><th>Message</th><th>Worker</th><th>Attempt</th>"
        "</tr></thead><tbody>"
    )
    for row in rows:
        message = _e(row["error_message"] or "")
        caused = row.get("caused_by")
        if caused:
            message += (
                f'<div class="cause">caused by {_e(caused.get("task"))} '
                f"<code>{_e(caused.get('key'))}</code></div>"
            )
        if row["traceback"]:
            message += (
                f"<details><summary>traceback</summary><pre>{_e(row['traceback'])}</pre></details>"
            )
        at = "–" if row["at"] is None else f"+{row['at']:.3f} s"
        worker = _worker_label(fig, row["worker"]) if row["worker"] else "– (never ran)"
        out.append(
            f'<tr class="failure"><td class="num">{_e(at)}</td><td>{_e(row["task"])}</td>'
            f'<td><code>{_e(row["key"])}</code></td><td class="bad">{_e(row["error_type"])}</td>'
            f"<td>{message}</td><td>{_e(worker)}</td><td>{_e(row['attempt'])}</td></tr>"
        )
    out.append("</tbody></table>")
    if total > len(rows):
        out.append(f'<p class="note">Showing the first {len(rows)} of {total} failures.</p>')
    out.append("</section>")
    return "\n".join(out)


def _cache_section(fig: dict) -> str:
    cache = fig["cache"]
    out = ['<section id="cache-section"><h2>Cache</h2>']
    if not cache["lookups"]:
        out.append('<p class="empty">No cache lookups in this run.</p></section>')
        return "\n".join(out)
    rate = 100 * cache["hits"] / cache["lookups"]
    out.append(
        '<div class="cards" id="cache-summary">'
        f'<div class="card"><span class="n">{cache["lookups"]}</span>Lookups</div>'
        f'<div class="card ok"><span class="n">{cache["hits"]}</span>Hits</div>'
        f'<div class="card"><span class="n">{cache["misses"]}</span>Misses</div>'
        f'<div class="card"><span class="n">{rate:.0f}%</span>Hit rate</div>'
        f'<div class="card"><span class="n">{_e(_fmt_seconds(cache["saved_s"]))}</span>'
        "Compute time saved</div></div>"
    )
    out.append(_miss_reasons(cache))
    out.append(
        '<table class="data" id="cache-table"><thead><tr><th>Function</th><th>Lookups</th>'
        "<th>Hits</th><th>Misses</th><th>Hit rate</th><th>Time saved</th>"
        "<th>Mean lookup</th></tr></thead><tbody>"
    )
    for f in cache["functions"]:
        f_rate = 100 * f["hits"] / f["lookups"] if f["lookups"] else 0.0
        out.append(
            f'<tr><td class="name">{_e(f["function"])}</td><td>{f["lookups"]}</td>'
            f"<td>{f['hits']}</td><td>{f['misses']}</td>"
            f'<td><span class="meter"><span style="width:{f_rate:.1f}%"></span></span>'
            f"{f_rate:.0f}%</td><td>{_e(_fmt_seconds(f['saved_s']))}</td>"
            f"<td>{_e(_fmt_seconds(f['lookup_s']))}</td></tr>"
        )
    out.append("</tbody></table></section>")
    return "\n".join(out)


def _whatif_section(run, fig: dict) -> str:
    """Predicted durations with other numbers of workers (`analysis.whatif.scenarios`)."""
    from ...errors import ScalableError
    from ..whatif import HTML_MAX_TASKS, more_workers, scenarios

    out = ['<section id="whatif-section"><h2>What if</h2>']
    submitted = fig["counts"].get("submitted") or 0
    try:
        if submitted > HTML_MAX_TASKS:
            raise ScalableError(
                f"not computed for runs of more than {HTML_MAX_TASKS:,} tasks "
                "(run `scalable whatif`)"
            )
        results = scenarios(run)
    except (ScalableError, OSError) as exc:
        out.append(f'<p class="empty">{_e(exc)}</p></section>')
        return "".join(out)
    first = results[0]
    out.append(
        f'<p class="hint">The run\'s graph and measured durations replayed with other '
        f"workers (model: <code>scalable whatif --help</code>, docs/analysis.md). Real "
        f"duration {_fmt_seconds(first.real_duration_s)}; the replay of the run as it was "
        f"gives {_fmt_seconds(first.replay_duration_s)} "
        f"({first.replay_error_percent:+.1f}%): the model's error on this run.</p>"
        "<table><thead><tr><th>workers</th><th>threads each</th><th>predicted</th>"
        "<th>against real</th><th>worker-hours</th></tr></thead><tbody>"
    )
    for r in results:
        hours = r.worker_hours["predicted"]
        out.append(
            f"<tr><td>{r.workers}{' (as it was)' if r.workers == r.real_workers else ''}</td>"
            f"<td>{r.threads_per_worker}</td><td>{_fmt_seconds(r.predicted_duration_s)}</td>"
            f"<td>{round(r.predicted_change_percent) + 0:+d}%</td>"
            f"<td>{'' if hours is None else f'{hours:.4g}'}</td></tr>"
        )
    out.append(f'</tbody></table><p class="note">{_e(more_workers(results[-1]))}</p>')
    out += [f'<p class="note">{_e(note)}</p>' for note in results[-1].notes]
    out.append("</section>")
    return "".join(out)


def _miss_reasons(cache: dict) -> str:
    """Why the lookups missed (`analysis.cache_misses`): a table of reasons and counts."""
    reasons = cache.get("miss_reasons") or {}
    if set(reasons) <= {sc.CACHE_MISS_UNKNOWN}:  # nothing said why (an older run, say)
        return ""
    arguments = cache.get("miss_arguments") or {}
    rows = []
    for reason, count in reasons.items():
        detail = ""
        if reason == sc.CACHE_MISS_ARGUMENTS and arguments:
            detail = ", ".join(f"{name} ({n})" for name, n in arguments.items())
        rows.append(
            f'<tr><td class="name">{_e(reason)}</td><td>{count}</td><td>{_e(detail)}</td></tr>'
        )
    return (
        '<table class="data" id="cache-misses"><thead><tr><th>Why it missed</th>'
        "<th>Misses</th><th>Arguments that differed</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _timeline_note(fig: dict) -> str:
    total, drawn = fig["total_attempts"], len(fig["drawn"])
    if drawn >= total:
        return ""
    slice_s = _fmt_seconds(fig["busy"]["width"]) if fig["busy"] else "–"
    return (
        f'<p class="note" id="timeline-cap">This run has {total:,} attempts: the timeline '
        f"draws {drawn:,} of them (every attempt that did not complete, then the longest). "
        "The shaded band under each worker's lanes is how many attempts ran on it at once, "
        f"averaged over slices of {_e(slice_s)}, from all of them. Durations and tables use "
        "all of them.</p>"
    )


def html_report(run, *, max_bars: int = MAX_BARS, summary: dict | None = None) -> str:
    """The HTML report of one run, as one self-contained page (see the package docstring).

    `run` is what `load_run` returns (a run id, a unique prefix of one or a run directory
    path is loaded with `load_run` first). Files that are empty or missing columns, as in a
    run still in progress, a crashed run or a run without cache use, leave their section
    empty. `max_bars` caps the attempts drawn on the timeline. `summary` is the run's
    report (`analysis.report.report(run)`) when the caller has made it already.

    >>> from scalable_otel.analysis import load_run                   # doctest: +SKIP
    >>> page = html_report(load_run(last=True))                        # doctest: +SKIP
    >>> page.startswith("<!DOCTYPE html>")                             # doctest: +SKIP
    True
    """
    if not hasattr(run, "meta"):
        from ..load import load_run

        run = load_run(run)
    fig = figures(run, max_bars, summary=summary)
    script = asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = (
        "default-src 'none'; "
        f"script-src 'sha256-{digest}'; "
        "style-src 'unsafe-inline'; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    origin = _fmt_time(utc(fig["start_us"]))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(run.run_id)} · scalable-otel run report</title>",
        f"<style>{asset('report.css')}</style></head><body>",
        _header(run, fig),
        '<nav><a href="#timeline-section">Timeline</a><a href="#resources-section">'
        'CPU &amp; memory</a><a href="#critical-path-section">Critical path</a>'
        '<a href="#durations-section">Durations</a>'
        + ('<a href="#groups-section">Groups</a>' if fig["groups"] else "")
        + '<a href="#failures-section">Failures</a><a href="#cache-section">Cache</a>'
        '<a href="#whatif-section">What if</a></nav>',
        '<noscript><p class="note">The charts need JavaScript; the tables below do not.'
        "</p></noscript>",
        '<section id="timeline-section"><div class="section-head"><h2>Timeline</h2>'
        '<button type="button" class="reset-zoom" hidden>Reset zoom</button></div>',
        f'<p class="hint">One bar per task attempt, on its worker\'s row, coloured by task. '
        f"Time is seconds since the run started ({_e(origin)}). Hover a bar for details; "
        "drag across a chart to zoom, double-click to zoom out.</p>",
        _timeline_note(fig),
        '<div id="legend" class="legend"></div>',
        '<div id="timeline" class="chart"></div></section>',
        '<section id="resources-section"><div class="section-head">'
        '<h2>Worker CPU and memory</h2><button type="button" class="reset-zoom" hidden>'
        "Reset zoom</button></div>",
        '<p class="hint">From each worker\'s resource samples. CPU is in percent of one core.</p>',
        '<div id="resources" class="chart"></div></section>',
        critical_section(fig["critical_path"], fig["start_us"]),
        '<section id="durations-section"><h2>Task durations</h2>',
        '<p class="hint">Execution time on the worker of each attempt that ran (completed or '
        "raised): whiskers at min and max, box at the quartiles, line at the median.</p>",
        '<div id="durations" class="chart"></div>',
        _task_table(fig),
        "</section>",
        groups_section(fig["groups"]),
        time_breakdown_section(fig.get("fine_metrics")),
        _failures_section(fig),
        _cache_section(fig),
        _whatif_section(run, fig),
        f"<footer>scalable-otel {_e(__version__)} · {_e(run.path)}</footer>",
        f'<script type="application/json" id="run-data">{json_for_script(payload(fig))}</script>',
        f"<script>{script}</script>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def write_html_report(
    run, path: str | os.PathLike, *, max_bars: int = MAX_BARS, summary: dict | None = None
) -> Path:
    """Write `html_report(run)` to `path` (a directory gets `<run id>.html`); returns the file.

    >>> from scalable_otel.analysis import load_run                   # doctest: +SKIP
    >>> write_html_report(load_run(last=True), "report.html")          # doctest: +SKIP
    PosixPath('report.html')
    """
    if not hasattr(run, "meta"):
        from ..load import load_run

        run = load_run(run)
    target = Path(path)
    if target.is_dir():
        target = target / f"{run.run_id}.html"
    make_private_dirs(target.parent)
    page = html_report(run, max_bars=max_bars, summary=summary)
    with replaced_atomically(target) as tmp:  # owner-only, like the run it shows
        tmp.write_text(page, encoding="utf-8")
    return target
