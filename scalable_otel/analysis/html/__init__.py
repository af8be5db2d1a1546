"""A self-contained HTML report of one run: timeline, worker resources, durations, failures, cache.

The page is one file that opens offline. It loads nothing: no external script, font,
stylesheet or image. The run's figures are embedded as JSON in a
``<script type="application/json">`` block and drawn as SVG by inline JavaScript
(``report.js``, styled by ``report.css``: package data, inlined into each page); the
tables (header, per-task figures, failures, cache) are plain HTML, readable without
JavaScript. A Content-Security-Policy in the page allows no network access at all and only
the page's own script (by its SHA-256 hash), so even text that got into the page unescaped
could not run or load anything.

Everything taken from the run (task names, keys, argument summaries, error messages,
worker names) is user data. It reaches HTML only through :func:`html.escape`, the JSON
block escapes ``<``, ``>`` and ``&`` (so no ``</script>`` can end it), and the script
sets text only with ``textContent`` and ``setAttribute``.

What the page shows:

- **Header**: run id, status, project, target and provider, start, end, duration, and
  counts (tasks submitted, completed, failed, cancelled, attempts, workers, cache hit
  rate). Submitted, completed, failed and the cache's lookups and hits are the run
  report's (`analysis.report.report`): the page counts nothing of its own there.
- **Timeline**: one bar per task attempt, on the row of its worker, from its
  ``task_started`` line to the ``task_completed``, ``task_failed`` or ``task_cancelled``
  line with the same ``key`` and ``attempt``, coloured by task name. Failed attempts have a
  red outline and a red mark. An attempt with no end line of its own was lost (a later
  attempt of the same key exists, or its worker went away); it ends at its
  ``task_resources`` line, else at its worker's removal, else at the next attempt's start,
  and is drawn dashed. An attempt with no end at all (a run in progress or cut short) is
  drawn faded up to the last time the run recorded. A completed or failed line with a worker
  but no ``task_started`` line (a lost line) gets a bar from ``timestamp - duration_s``.
  Attempts that overlap on a worker (several threads) are stacked in lanes. Each bar is an
  SVG ``rect`` with ``class="task-bar"`` (plus ``failed``, ``lost``, ``cancelled`` or
  ``unfinished``), ``data-key`` and ``data-attempt``, and a ``<title>`` with task, key,
  worker, attempt, times, duration, queue wait, arguments and error. When drawn, the
  timeline element gets ``data-drawn-tasks="<number of bars>"``. The matching is data
  (``attempts``), tested without a browser.
- **Critical path**: the chain of attempts that set the run's duration
  (`analysis.critical_path`): its summary line and a row per link; its bars on the
  timeline get the class ``critical`` and are joined by dashed lines, and the timeline
  element gets ``data-critical-bars`` (how many were drawn). Left out for runs of more
  than ``MAX_PATH_ATTEMPTS`` (20,000) attempts unless the report passed in holds it.
- **Worker CPU and memory**: ``cpu_percent`` and ``memory_bytes`` of the
  ``resource_sample`` lines, one line per worker, on the same time axis as the timeline.
  Drag across any time chart to zoom all of them; double-click to zoom out.
- **Task durations**: per task name, a box plot of ``duration_s`` of the attempts that
  ran (completed or raised): whiskers at min and max, box at the quartiles, a line at the
  median, and the values as dots; a log scale when they span more than two decades. A table
  below it gives attempts, completed, failed, cancelled, total, mean, median, p95 and max.
- **Failures**: task, key, error type, message, worker, attempt and time of each failed
  task (from ``failures.jsonl``, else from ``task_failed`` lines), with the traceback.
  The error shown on a failed attempt's bar comes from the same lines.
- **Cache**: lookups, hits, misses, hit rate and time saved, in total and per function.

Limits, so that very large runs keep a usable file and page:

- **Reading**: the run's files are read through DuckDB (their columnar copy when a closed
  run has one) and aggregated there: no file becomes a DataFrame, and only what the page
  shows becomes Python objects. A run of a million task events makes its page in a few
  seconds and a few hundred MB (``benchmarks/report.py --html``).
- **Timeline**: at most ``MAX_BARS`` (20,000) attempts are drawn. If a run has more, every
  attempt that did not complete (failed, lost, cancelled, unfinished; at most the cap) is
  kept, and the longest completed attempts fill the rest. The page says how many of how many
  attempts it draws, and each worker's row then also has a shaded band under its lanes:
  how many attempts ran on it at once, averaged over time slices (at most 600 per
  worker), from every attempt (``data-busy-workers`` on the timeline element counts the
  bands drawn). Durations, counts and tables still use every attempt.
- **Resource lines**: a worker's CPU or memory series longer than ``MAX_RESOURCE_POINTS``
  (2,000) is cut to that many points by keeping the lowest and the highest sample of each
  run of consecutive samples, so spikes stay visible.
- **Durations**: the box plots use every value (quantiles computed in SQL); at most
  ``MAX_DURATION_DOTS`` (300) dots per task name are drawn (evenly spaced quantiles). At
  most ``MAX_TASK_NAMES`` (60) task names, those with the most total time, are shown in
  the chart and table.
- **Text**: argument summaries are cut to 200 characters in the page, error messages in
  hover titles to 500, tracebacks to their last 8,000; at most ``MAX_FAILURE_ROWS`` (1,000)
  failures are listed (the earliest).

The package: ``figures`` (what the page shows, as data: ``attempts``, ``durations``,
``resources`` and ``failures`` read the run), ``page`` (the escaped HTML), ``report.js``
and ``report.css``.

>>> from scalable_otel.analysis import load_run                       # doctest: +SKIP
>>> from scalable_otel.analysis.html import write_html_report          # doctest: +SKIP
>>> write_html_report(load_run(last=True), "report.html")              # doctest: +SKIP
PosixPath('report.html')
"""

from .figures import MAX_BARS, header_counts
from .page import html_report, write_html_report

__all__ = ["html_report", "write_html_report", "header_counts", "MAX_BARS"]
