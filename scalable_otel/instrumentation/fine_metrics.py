"""Dask's fine performance metrics of one run, read on the scheduler.

Workers measure where each task's time goes (thread CPU, thread non-CPU, executor
overhead, (de)serialization, disk, memory, transfers) and send the sums with their
heartbeats; the scheduler adds them up forever, cluster-wide: by task prefix in
`Scheduler.cumulative_worker_metrics` (keys `("execute", prefix, activity, unit)`, and
`(context, activity, unit)` for `gather-dep`, `get-data`, `memory-monitor`), and by
Dask span in its spans extension (`Span.cumulative_worker_metrics`, a span and its
children).

A run's figures are what was added since it began: the prefix and cluster totals less
the totals when the run's plugin started, for the prefixes of the run's tasks; a span's
own figures (its children's taken out) less its own when the first task of the run
entered it. On a scheduler shared with other runs, a prefix or the cluster's transfers
count what the others did meanwhile too; a span is one run's unless runs share it
(Dask's default span, where tasks outside any `distributed.span` go).

`FineMetrics.changed` runs on the scheduler's event loop: it returns the rows whose
value changed since its last call, each `semconv.FINE_METRIC_FIELDS`.
"""

from __future__ import annotations

from collections import defaultdict

from .. import compat
from .. import semconv as sc

_EXECUTE = "execute"
_DEFAULT_SPAN = ("default",)
_UNKNOWN_PREFIX = "N/A"  # Dask's synthetic "idle or other spans" figure of a span


def _tuple_keys(metrics) -> dict:
    """The metrics whose key is a tuple of names (Dask keeps a few plain ones too)."""
    return {k: v for k, v in metrics.items() if isinstance(k, tuple) and len(k) >= 3}


def _own(span) -> dict:
    """A span's own figures: its subtree's, less its children's subtrees'."""
    own = defaultdict(float)
    for key, value in span.cumulative_worker_metrics.items():
        if key[1] != _UNKNOWN_PREFIX:
            own[key] += value
    for child in span.children:
        for key, value in child.cumulative_worker_metrics.items():
            if key[1] != _UNKNOWN_PREFIX:
                own[key] -= value
    return own


class FineMetrics:
    """One run's fine performance metrics on its scheduler. See the module docstring."""

    def __init__(self):
        self._prefixes: set = set()
        self._cluster_base: dict | None = None
        self._span_base: dict = {}  # span id -> its own figures when it became the run's
        self._sent: dict = {}  # row key -> the value last sent
        self._broken: set = set()  # the parts that failed: "cluster", "spans"
        self.fallbacks: list = []  # compat names to report (once per part)

    def _fail(self, part: str, exc: BaseException | None) -> None:
        if part not in self._broken:
            self._broken.add(part)
            compat.fell_back(compat.FINE_METRICS, exc)
            self.fallbacks.append(compat.FINE_METRICS)

    def start(self, scheduler) -> None:
        """The totals the run begins with."""
        try:
            self._cluster_base = _tuple_keys(scheduler.cumulative_worker_metrics)
        except Exception as exc:
            self._fail("cluster", exc)

    def joined(self, scheduler, ts) -> None:
        """A task became the run's: its prefix and its span are."""
        self._prefixes.add(ts.prefix.name)
        if scheduler is None or "spans" in self._broken:
            return
        try:
            span_id = ts.group.span_id
            if span_id is None or span_id in self._span_base:
                return
            span = scheduler.extensions["spans"].spans[span_id]
            self._span_base[span_id] = _own(span)
        except Exception as exc:
            self._fail("spans", exc)

    def changed(self, scheduler) -> list:
        """The rows whose value changed since the last call."""
        rows = {}
        if self._cluster_base is not None and "cluster" not in self._broken:
            try:
                self._cluster_rows(scheduler, rows)
            except Exception as exc:
                self._fail("cluster", exc)
        if self._span_base and "spans" not in self._broken:
            try:
                self._span_rows(scheduler, rows)
            except Exception as exc:
                self._fail("spans", exc)
        out = []
        for key, value in rows.items():
            value = round(value, 9)
            if value <= 0 and key not in self._sent:
                continue
            if self._sent.get(key) != value:
                self._sent[key] = value
                out.append([*key, value])
        return out

    def _cluster_rows(self, scheduler, rows: dict) -> None:
        base = self._cluster_base
        for key, value in _tuple_keys(scheduler.cumulative_worker_metrics).items():
            value -= base.get(key, 0)
            if key[0] == _EXECUTE and len(key) == 4:
                _, prefix, activity, unit = key
                if prefix in self._prefixes:
                    row = (sc.SCOPE_PREFIX, _EXECUTE, prefix, None, None, str(activity), unit)
                    rows[row] = rows.get(row, 0) + value
            elif len(key) == 3:
                context, activity, unit = key
                row = (sc.SCOPE_CLUSTER, str(context), None, None, None, str(activity), unit)
                rows[row] = rows.get(row, 0) + value

    def _span_rows(self, scheduler, rows: dict) -> None:
        spans = scheduler.extensions["spans"].spans
        for span_id, base in self._span_base.items():
            span = spans.get(span_id)
            if span is None:
                continue
            default = tuple(span.name) == _DEFAULT_SPAN
            group = None if default else span_id
            path = None if default else list(span.name)
            for key, value in _own(span).items():
                if len(key) != 4:
                    continue
                context, prefix, activity, unit = key
                prefix = str(prefix) if context == _EXECUTE else None
                row = (sc.SCOPE_GROUP, str(context), prefix, group, path, str(activity), unit)
                hashable = (*row[:4], tuple(path) if path else None, *row[5:])
                entry = rows.get(hashable)
                rows[hashable] = (entry or 0) + value - base.get(key, 0)
