"""The critical path of a run: the chain of task attempts that set its duration.

The walk starts at the attempt that ended last (of those that completed or raised on a
worker) and goes back one link at a time. A link's predecessor is whichever ended last of:

- its dependencies: per dependency, the completed attempt that ended last before the
  link started (the result it used); linked by ``dependency``;
- when the link was ready but every thread of its worker was busy, the attempt on that
  worker that ended last before it started (the one that freed a thread); linked by
  ``worker``;
- its submission, when the key was submitted after both of those ended (a graph the
  client sent later, after waiting for results): the predecessor is then the attempt
  that ended last, anywhere, before the submission (within ``DEPENDENCY_SKEW_S``), and
  the time from its end to the submission is the client's (``client``).

The walk stops at a link with none of these (its submission starts its wait).

Each link's share of the run's wall time runs from its predecessor's end (its
submission, for the first link and for ``client`` links) to its own end, split into:

- ``execution_s``: its ``duration_s`` (Dask's compute interval on the worker);
- ``dependency_wait_s``: waiting for dependencies, data transfer and dispatch (the
  part of the gap before its start not counted below);
- the part of the gap during which every thread of its worker was busy (with attempts
  off the path; with the rest, the summary's ``waiting_s``);
- ``lost_s``: earlier attempts of the same key (lost or failed) inside the gap.

Everything not on a link (session start and graph submission before the first,
gathering results and closing after the last) is ``else_s``, so the summary's
``execution_s``, ``waiting_s``, ``lost_s``, ``client_s`` and ``else_s`` add up to the
wall time. (Clock skew can make consecutive links overlap by a few milliseconds, which
takes that much from ``else_s``.)

A link's ``worker_wait_s`` is its whole wait for a free worker: the part of [ready,
start] during which all its worker's threads were busy. For a ``worker`` link that time
is mostly its predecessor's execution, already counted on the path. The summary's
``worker_wait_s`` is the time on the path during which the next link was ready but
queued for its worker: the overlap of each ``worker`` link's wait with its
predecessor's execution, plus the worker waits inside gaps. It overlaps
``execution_s``: it is how much of the path exists because workers were full.

Clocks: a task's ready time (the scheduler's) can precede its dependency's computed end
(the worker's compute interval) by some 10 ms, so a link is taken to be ready no earlier
than its dependencies ended, negative gaps count as 0, and a dependency may end up to
``DEPENDENCY_SKEW_S`` after the link's start.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import asdict, dataclass, field

from .graph import Execution, run_graph
from .load import Run
from .report import run_times

DEPENDENCY_SKEW_S = 0.05
# Ends on one worker come from that worker's own start and compute interval: only
# rounding and the start's source (the plugin's or Dask's) separate them.
WORKER_SKEW_S = 0.005
# Below this, a wait for a free worker is noise, not a reason to follow the worker.
MIN_WORKER_WAIT_S = 0.001


@dataclass(frozen=True, slots=True)
class Link:
    """One attempt on the critical path (times in seconds since the epoch)."""

    key: str
    task: str | None
    attempt: int
    worker: str | None
    status: str
    start: float
    end: float
    linked_by: str | None  # dependency, worker, client; None for the first link
    after: str | None  # the predecessor's key
    execution_s: float
    wait_s: float  # from the predecessor's end (or the submission) to the start
    worker_wait_s: float  # ready, but every thread of its worker busy
    dependency_wait_s: float
    lost_s: float
    earlier_attempts: int
    client_s: float


@dataclass
class CriticalPath:
    """The links from first to last and the summary of the run's wall time."""

    available: bool
    reason: str | None = None
    links: list[Link] = field(default_factory=list)
    wall_s: float | None = None
    execution_s: float = 0.0
    dependency_wait_s: float = 0.0
    gap_worker_wait_s: float = 0.0  # waits for a full worker between links
    lost_s: float = 0.0
    client_s: float = 0.0
    before_s: float = 0.0
    after_s: float = 0.0
    held_s: float = 0.0  # executions on the path the next link queued behind

    @property
    def waiting_s(self) -> float:
        """Waiting between links: for dependencies, transfer, dispatch and workers."""
        return self.gap_worker_wait_s + self.dependency_wait_s

    @property
    def worker_wait_s(self) -> float:
        """Time on the path during which the next link was queued for its worker
        (overlaps `execution_s`; see the module's docstring)."""
        return self.held_s + self.gap_worker_wait_s

    @property
    def else_s(self) -> float:
        """The wall time not on a link (before the first, after the last, overlaps)."""
        if self.wall_s is None:
            return 0.0
        return self.wall_s - self.execution_s - self.waiting_s - self.lost_s - self.client_s

    def shares(self) -> dict[str, float | None]:
        """Execution, waiting, lost, client and else as fractions of the wall time."""
        parts = {
            "execution": self.execution_s,
            "waiting": self.waiting_s,
            "lost": self.lost_s,
            "client": self.client_s,
            "else": self.else_s,
        }
        wall = self.wall_s
        return {k: (v / wall if wall else None) for k, v in parts.items()}

    def to_dict(self) -> dict:
        """The path as plain data (what `--format json` prints under `critical_path`)."""
        out = {"available": self.available, "reason": self.reason}
        out["links"] = [asdict(link) for link in self.links]
        out["summary"] = {
            "tasks": len(self.links),
            "wall_s": self.wall_s,
            "execution_s": self.execution_s,
            "waiting_s": self.waiting_s,
            "dependency_wait_s": self.dependency_wait_s,
            "lost_s": self.lost_s,
            "client_s": self.client_s,
            "else_s": self.else_s,
            "before_s": self.before_s,
            "after_s": self.after_s,
            "worker_wait_s": self.worker_wait_s,
            "shares": self.shares(),
        }
        return out


class _Busy:
    """When every thread of one worker was busy: disjoint intervals with prefix sums, so
    the busy time inside any window takes two bisections."""

    def __init__(self, executions: list[Execution], threads: int | None):
        # at the same time, an end (-1) sorts before a start (+1)
        edges = sorted([(e.start, 1) for e in executions] + [(e.end, -1) for e in executions])
        if not threads:  # no worker_added line: as many as ever ran at once
            level = threads = 0
            for _, delta in edges:
                level += delta
                threads = max(threads, level)
        self.starts: list[float] = []
        self.ends: list[float] = []
        level = 0
        for when, delta in edges:
            level += delta
            if delta > 0 and level == threads:
                self.starts.append(when)
            elif delta < 0 and level == threads - 1:
                self.ends.append(when)
        self.prefix = [0.0]
        for start, end in zip(self.starts, self.ends):
            self.prefix.append(self.prefix[-1] + end - start)

    def within(self, lo: float, hi: float) -> float:
        """Seconds of [lo, hi] during which every thread was busy."""
        if hi <= lo:
            return 0.0
        first = bisect_right(self.ends, lo)
        last = bisect_left(self.starts, hi)
        if first >= last:
            return 0.0
        total = self.prefix[last] - self.prefix[first]
        total -= max(0.0, lo - self.starts[first])
        total -= max(0.0, self.ends[last - 1] - hi)
        return max(0.0, total)


class _Ended:
    """Executions sorted by end, to find the one that ended last before a time."""

    def __init__(self, executions: list[Execution]):
        self.items = sorted(executions, key=lambda e: (e.end, e.start))
        self.ends = [e.end for e in self.items]

    def last_before(
        self, when: float, link: Execution, submitted_before: float | None = None
    ) -> Execution | None:
        """The execution that ended last at or before `when` and started before `link`
        (and, with `submitted_before`, was submitted before that time)."""
        i = bisect_right(self.ends, when)
        while i > 0:
            i -= 1
            found = self.items[i]
            if found.start < link.start and found is not link:
                if submitted_before is None or (found.submitted or 0.0) < submitted_before:
                    return found
        return None


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def critical_path(run: Run) -> CriticalPath:
    """The critical path of `run` (see the module's docstring), from its executed graph
    (`graph.run_graph`, read once per loaded run).

    >>> path = critical_path(load_run(last=True))                     # doctest: +SKIP
    >>> [link.key for link in path.links], path.shares()["execution"]  # doctest: +SKIP
    """
    from .beta import FORMAT

    if run.meta.get("format") == FORMAT:
        return CriticalPath(False, "the Scalable 2.0 beta recorded no task starts")
    graph = run_graph(run)
    ran = [e for e in graph.executions if e.ran]
    ended = [e for e in ran if e.status in ("completed", "failed")]
    if not ended:
        return CriticalPath(False, "no task ran on a worker")

    run_start, run_end, wall = run_times(run)  # the report's: a live run's up to its last event
    if run_start is None:
        run_start = min(e.submitted or e.start for e in ran)
    if run_end is None:
        run_end = max(e.end for e in ran)
    if wall is None:
        wall = run_end - run_start

    by_worker = graph.by_worker()
    busy = {w: _Busy(execs, graph.threads.get(w)) for w, execs in by_worker.items()}
    on_worker = {w: _Ended(execs) for w, execs in by_worker.items()}
    anywhere = _Ended(ran)
    attempts: dict[str, list[Execution]] = {}
    for e in ran:
        attempts.setdefault(e.key, []).append(e)
    completed: dict[str, _Ended] = {}

    def used(key: str, link: Execution) -> Execution | None:
        # the completed attempt of `key` whose result `link` used
        if key not in completed:
            completed[key] = _Ended([e for e in attempts.get(key, ()) if e.status == "completed"])
        return completed[key].last_before(link.start + DEPENDENCY_SKEW_S, link)

    path = CriticalPath(True, wall_s=wall)
    links: list[Link] = []
    link = max(ended, key=lambda e: (e.end, e.start))
    path.after_s = max(0.0, run_end - link.end)
    while link is not None:
        dep = None
        for name in link.dependencies:
            found = used(name, link)
            if found is not None and (dep is None or found.end > dep.end):
                dep = found
        known = [x for x in (link.ready, link.submitted, dep and dep.end) if x is not None]
        ready = max(known, default=link.start)
        worker_busy = busy.get(link.worker)
        queued = worker_busy.within(ready, link.start) if worker_busy else 0.0
        held = None
        if queued >= MIN_WORKER_WAIT_S:
            held = on_worker[link.worker].last_before(link.start + WORKER_SKEW_S, link)
        previous, linked_by = dep, "dependency" if dep else None
        if held is not None and (dep is None or held.end > dep.end + MIN_WORKER_WAIT_S):
            previous, linked_by = held, "worker"
        window = previous.end if previous is not None else None
        client = 0.0
        submitted = link.submitted
        if submitted is not None and (window is None or submitted > window + DEPENDENCY_SKEW_S):
            # a result can reach the client before the worker-clock end of its compute
            previous = anywhere.last_before(submitted + DEPENDENCY_SKEW_S, link)
            if previous is None:
                # Dask's estimate of a worker's clock offset can be off by more than the
                # skew allowed (100-160 ms seen with distributed 2024.12 on a loaded
                # host): then the attempt submitted before this one that ended last
                # before it started is the one the client waited for.
                previous = anywhere.last_before(link.start, link, submitted_before=submitted)
            linked_by = "client" if previous is not None else None
            client = max(0.0, submitted - previous.end) if previous is not None else 0.0
            window = max(submitted, previous.end) if previous is not None else submitted
        if window is None:
            window = link.ready if link.ready is not None else link.start
        gap = max(0.0, link.start - window)
        in_gap = worker_busy.within(max(window, ready), link.start) if worker_busy else 0.0
        earlier = [
            e for e in attempts[link.key] if e.attempt < link.attempt and e.status != "completed"
        ]
        lost = min(gap, sum((_overlap(e.start, e.end, window, link.start) for e in earlier), 0.0))
        in_gap = min(in_gap, gap - lost)
        links.append(
            Link(
                key=link.key,
                task=link.task,
                attempt=link.attempt,
                worker=link.worker,
                status=link.status,
                start=link.start,
                end=link.end,
                linked_by=linked_by,
                after=previous.key if previous is not None else None,
                execution_s=link.duration_s or 0.0,
                wait_s=gap,
                worker_wait_s=queued,
                dependency_wait_s=gap - lost - in_gap,
                lost_s=lost,
                earlier_attempts=len(earlier),
                client_s=client,
            )
        )
        path.execution_s += link.duration_s or 0.0
        path.gap_worker_wait_s += in_gap
        path.dependency_wait_s += gap - lost - in_gap
        path.lost_s += lost
        path.client_s += client
        if linked_by == "worker":
            path.held_s += _overlap(previous.start, previous.end, ready, link.start)
        if previous is None:
            path.before_s = max(0.0, window - run_start)
        link = previous
    path.links = links[::-1]
    return path


def _short(key: str, width: int = 32) -> str:
    return key if len(key) <= width else key[: width - 1] + "…"


def _after(link: dict) -> str:
    if link["linked_by"] is None:
        return "(start)"
    after = _short(link["after"] or "?", 20)
    return after if link["linked_by"] == "dependency" else f"{after} ({link['linked_by']})"


def format_critical_path(path: dict) -> str:
    """The critical path as text: a table of links and the summary line."""
    from .report import seconds

    if not path["available"]:
        return f"Critical path: not available ({path['reason']})"
    summary = path["summary"]
    rows = [("Task", "Key", "Worker", "After", "Queued", "Deps+transfer", "Execution")]
    for link in path["links"]:
        rows.append(
            (
                link["task"] or "?",
                _short(link["key"]),
                link["worker"] or "?",
                _after(link),
                seconds(link["worker_wait_s"]),
                seconds(link["dependency_wait_s"]),
                seconds(link["execution_s"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["Critical path:"]
    for row in rows:
        cells = [c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    lines += ["", summary_line(summary)]
    return "\n".join(lines)


def summary_line(summary: dict) -> str:
    """One line: how the run's wall time splits along the path."""
    from .report import seconds

    shares = summary["shares"]

    def part(name: str, value: float) -> str:
        share = shares.get(name)
        return seconds(value) + ("" if share is None else f" ({100 * share:.0f}%)")

    tasks = summary["tasks"]
    text = (
        f"Critical path: {tasks} task{'s' if tasks != 1 else ''}, "
        f"{seconds(summary['execution_s'])} of {seconds(summary['wall_s'])} wall "
        f"({100 * (shares['execution'] or 0):.0f}%) executing, "
        f"{part('waiting', summary['waiting_s'])} waiting between tasks"
    )
    if summary["lost_s"]:
        text += f", {part('lost', summary['lost_s'])} in lost attempts"
    if summary["client_s"]:
        text += f", {part('client', summary['client_s'])} in the client between graphs"
    text += f", {part('else', summary['else_s'])} before the first task and after the last"
    if summary["worker_wait_s"]:
        text += (
            f"; tasks on it waited {seconds(summary['worker_wait_s'])} for a busy worker "
            "(mostly while the task before them ran)"
        )
    return text
