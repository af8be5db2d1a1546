"""The HTML run report, rendered in real headless Chromium and read back from its DOM."""

import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from scalable_otel import ScalableSession
from scalable_otel.analysis import load_run
from scalable_otel.analysis.critical_path import critical_path
from scalable_otel.analysis.html import MAX_BARS, html_report, write_html_report
from tests import workloads
from tests.conftest import read_jsonl

BREAKOUT = "</script><script>alert(1)</script>"
HTML_IN_ERROR = "<img src=x onerror=alert(1)>"


# --- Chromium -----------------------------------------------------------------------------


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("SCALABLE_CI"):
        pytest.fail("headless Chromium is required on CI (SCALABLE_CI is set) but not found")
    pytest.skip("headless Chromium not found: install Debian's chromium (apt-get install chromium)")


class Dom(HTMLParser):
    """Every element of a serialized DOM: tag, attributes, and the text of script elements."""

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.titles: list[str] = []  # the text of each <title> (the hover titles of the SVG)
        self._in_title = False
        self.markup = markup
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {k: ("" if v is None else v) for k, v in attrs}))
        if tag == "title":
            self._in_title = True
            self.titles.append("")

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {k: ("" if v is None else v) for k, v in attrs}))

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.titles[-1] += data

    def tags(self, tag):
        return [attrs for t, attrs in self.elements if t == tag]

    def with_class(self, name, tag=None):
        return [
            attrs
            for t, attrs in self.elements
            if (tag is None or t == tag) and name in attrs.get("class", "").split()
        ]

    def by_id(self, element_id):
        found = [attrs for _, attrs in self.elements if attrs.get("id") == element_id]
        assert len(found) == 1, f"expected one #{element_id}, found {len(found)}"
        return found[0]


def page_requests(netlog: Path) -> list[str]:
    """URLs the page itself asked the network for, from Chromium's net log.

    Chromium makes a few requests of its own (time sync, accounts); those have no page
    origin. A request of a file:// page carries the file:// network isolation key.
    """
    log = json.loads(netlog.read_text())
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if names.get(event["type"]) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        isolation = str(params.get("network_isolation_key", ""))
        if "file://" in isolation or params.get("initiator") not in (None, "not an origin"):
            urls.append(params["url"])
    return urls


def render(page: Path, tmp_path: Path) -> tuple[Dom, list[str], list[str]]:
    """Load `page` in headless Chromium: its DOM after the scripts ran, the URLs it
    requested and the console messages (uncaught errors included)."""
    binary = chromium_binary()
    profile = tmp_path / f"profile-{page.stem}"
    netlog = tmp_path / f"{page.stem}.netlog.json"
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--window-size=1280,1000",
        "--enable-logging=stderr",
        f"--log-net-log={netlog}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "</html>" in result.stdout, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return Dom(result.stdout), page_requests(netlog), console


def assert_offline(dom: Dom, requests: list[str], console: list[str]) -> None:
    assert requests == [], f"the page requested {requests}"
    assert console == [], console  # no script error, no CSP violation
    for tag, attrs in dom.elements:
        for name in ("src", "href", "action", "data", "poster", "srcset", "xlink:href"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), (tag, name, value)
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", attrs.get("style", "")), attrs
    assert not re.search(r"(src|href)\s*=\s*['\"]?\s*(https?:)?//", dom.markup, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", dom.markup, re.I)
    csp = [
        a["content"] for a in dom.tags("meta") if a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert len(csp) == 1 and "default-src 'none'" in csp[0]


def assert_two_scripts(dom: Dom) -> None:
    """Only the page's own two script elements: the JSON data and the inline drawing code."""
    scripts = dom.tags("script")
    assert len(scripts) == 2, scripts
    assert scripts[0] == {"type": "application/json", "id": "run-data"}
    assert scripts[1] == {}


# --- a real run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One real LocalCluster run: cached work with misses and hits, a task retried twice
    before it fails, a failure whose message is HTML, arguments that try to end the report's
    script element, and a Dask array (tuple keys, several task names)."""
    da = pytest.importorskip("dask.array")
    root = tmp_path_factory.mktemp("html-report")
    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "SCALABLE_TELEMETRY",
            "OTEL_SDK_DISABLED",
            "SCALABLE_TARGET",
            "SCALABLE_MANIFEST",
        ):
            mp.delenv(name, raising=False)
        mp.chdir(root)
        with ScalableSession(
            target="local",
            n_workers=2,
            threads_per_worker=1,
            project="htmlreport",
            runs_dir=root / "runs",
            cache_dir=root / "cache",
        ) as s:
            assert s.gather(s.map(workloads.simulate, range(3))) == [0, 10, 20]
            again = s.map(workloads.simulate, range(3), pure=False)  # new tasks: cache hits
            assert s.gather(again) == [0, 10, 20]
            evil = s.submit(workloads.sleep_then, BREAKOUT, seconds=0.05)
            assert s.gather(evil) == BREAKOUT
            retried = s.submit(workloads.fail, 1, retries=2)
            html_error = s.submit(workloads.fail, HTML_IN_ERROR)
            assert s.gather([retried, html_error], errors="skip") == []
            assert s.client.compute(da.ones((20, 20), chunks=10).sum()).result() == 400
    return s.run_dir


def test_report_of_a_real_run_draws_every_attempt_in_chromium(real_run, tmp_path):
    lines = read_jsonl(real_run / "tasks.jsonl")
    started = [e for e in lines if e["event"] == "task_started"]
    ran = [e for e in lines if e["event"] in ("task_completed", "task_failed") and e["worker"]]
    task_of = {(e["key"], e["attempt"]): e["task"] for e in started + ran}
    attempts = Counter(task_of.keys())
    failed = {(e["key"], e["attempt"]) for e in ran if e["event"] == "task_failed"}
    retried = next(e for e in ran if e["event"] == "task_failed" and e["attempt"] == 3)
    samples = [
        e for e in read_jsonl(real_run / "resources.jsonl") if e["event"] == "resource_sample"
    ]
    cache = read_jsonl(real_run / "cache.jsonl")
    assert len(attempts) >= 15 and len(failed) == 2 and samples  # the run made what we check

    page = write_html_report(load_run(real_run), tmp_path / "report.html")
    began = time.monotonic()
    dom, requests, console = render(page, tmp_path)
    render_s = time.monotonic() - began

    # the timeline: one bar per attempt (key + attempt), every key, failed ones marked
    bars = dom.with_class("task-bar", "rect")
    drawn = Counter((b["data-key"], int(b["data-attempt"])) for b in bars)
    assert drawn == attempts
    assert {key for key, _ in drawn} == {e["key"] for e in started}
    assert dom.by_id("timeline")["data-drawn-tasks"] == str(len(attempts))
    marked = {(b["data-key"], int(b["data-attempt"])) for b in bars if "failed" in b["class"]}
    assert marked == failed
    lost = {(b["data-key"], int(b["data-attempt"])) for b in bars if "lost" in b["class"]}
    # the attempts retried before the last one failed (an attempt that started and ended
    # between two flushes of the worker plugin has no task_started line, and no bar)
    assert lost == {(k, a) for k, a in attempts if k == retried["key"] and a < 3}
    assert len(dom.with_class("fail-mark", "path")) == len(failed)
    by_task = Counter(b["data-task"] for b in bars)
    assert by_task == Counter(task_of.values())

    # the critical path: its attempts outlined, a row per link in its table
    path = {(link.key, link.attempt) for link in critical_path(load_run(real_run)).links}
    outlined = {(b["data-key"], int(b["data-attempt"])) for b in bars if "critical" in b["class"]}
    assert path and outlined == path & set(drawn)
    assert dom.by_id("timeline")["data-critical-bars"] == str(len(outlined))
    assert len(dom.with_class("critical-link", "tr")) == len(path)

    # CPU and memory: a line per worker that sent samples, in each chart
    workers = {e["worker"] for e in samples}
    for metric in ("cpu", "mem"):
        lines_drawn = [
            p for p in dom.with_class("resource-line", "polyline") if metric in p["class"]
        ]
        assert {p["data-worker"] for p in lines_drawn} == workers
        assert all(int(p["data-points"]) >= 1 and p["points"] for p in lines_drawn)
    assert dom.by_id("resources")["data-drawn-workers"] == str(len(workers))

    # durations: a box plot for every task name that ran, with every attempt counted
    rows = {g["data-task"]: int(g["data-count"]) for g in dom.with_class("duration-row", "g")}
    assert rows == dict(Counter(e["task"] for e in ran))
    assert len(dom.with_class("duration-box", "rect")) == len(rows)

    # failures and cache tables; the HTML in the error message stayed text
    assert len(dom.with_class("failure", "tr")) == len(read_jsonl(real_run / "failures.jsonl"))
    assert dom.tags("img") == [] and "&lt;img src=x onerror=alert(1)&gt;" in dom.markup
    hits = sum(e["result"] == "hit" for e in cache)
    misses = sum(e["result"] == "miss" for e in cache)
    assert (hits, misses) == (3, 3)
    assert f'<span class="n">{hits}</span>Hits' in dom.markup
    assert f'<span class="n">{len(cache)}</span>Lookups' in dom.markup
    assert '<span class="n">50%</span>Hit rate' in dom.markup

    # the argument that tries to end the script element is only data
    assert_two_scripts(dom)
    assert BREAKOUT not in page.read_text()
    assert sum(f'args: {{"x": "{BREAKOUT}"' in t for t in dom.titles) == 1  # hover text
    assert_offline(dom, requests, console)
    assert render_s < 20


def test_the_page_reads_the_executed_graph_once(real_run, monkeypatch):
    """The critical path and the what-if table are built on one reading of the graph."""
    from scalable_otel.analysis import graph

    reads = []
    read = graph._read_graph
    monkeypatch.setattr(graph, "_read_graph", lambda run: reads.append(run) or read(run))
    page = html_report(load_run(real_run))
    assert 'id="whatif-section"' in page and "critical-link" in page
    assert len(reads) == 1


def test_net_log_check_sees_a_page_request(tmp_path):
    """The offline check is not vacuous: a page that loads an image is caught."""
    probe = tmp_path / "probe.html"
    probe.write_text(
        '<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png"></body></html>'
    )
    _, requests, _ = render(probe, tmp_path)
    assert requests == ["http://127.0.0.1:9/x.png"]


# --- synthetic runs -----------------------------------------------------------------------

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


def stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_run(root: Path, name: str, run: dict | None, **files: list[dict]) -> Path:
    """A run directory written by hand, with the given lines in each JSONL file."""
    path = root / name
    path.mkdir(parents=True)
    if run is not None:
        (path / "run.json").write_bytes(orjson.dumps({"run_id": name, **run}))
    for file in ("tasks", "resources", "workers", "cache", "failures"):
        lines = files.get(file, [])
        (path / f"{file}.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in lines))
    return path


def task_lines(key, task, worker, start, end, *, attempt=1, outcome="task_completed", **extra):
    common = {"task": task, "key": key}
    final = {
        **common,
        "event": outcome,
        "timestamp": stamp(end),
        "worker": worker,
        "attempt": attempt,
        "duration_s": round(end - start, 6),
        "queue_wait_s": 0.001,
        **extra,
    }
    return [
        {**common, "event": "task_submitted", "timestamp": stamp(start), **extra},
        {
            **common,
            "event": "task_started",
            "timestamp": stamp(start),
            "worker": worker,
            "attempt": attempt,
            "queue_wait_s": 0.001,
        },
        final,
    ]


def test_an_end_line_with_an_absurd_duration_is_drawn_from_its_end(tmp_path):
    """A task's end line without its start line is drawn back from its end by its
    duration: one of 4.6e18 s (a damaged line, found by fuzzing) overflowed the query."""
    tasks = task_lines("a-1", "ok", "tcp://w:1", 0.1, 0.5)
    del tasks[1]  # no start line
    tasks[-1]["duration_s"] = 4.646124473487546e18
    run = write_run(tmp_path, "run-absurd", {"status": "completed"}, tasks=tasks)
    page = html_report(load_run(run))
    assert "a-1" in page


def test_arguments_cannot_break_out_of_the_page(tmp_path):
    evil_key = "k-\"'><svg onload=alert(1)>"
    tasks = task_lines("a-1", "ok", "tcp://w:1", 0.1, 0.5, args={"x": BREAKOUT})
    tasks += task_lines(evil_key, BREAKOUT, "tcp://w:1", 0.6, 0.9, args={"<!--": "]]><!--"})
    tasks += task_lines(
        "b-2",
        "boom",
        "tcp://w:2",
        0.2,
        0.4,
        outcome="task_failed",
        args=BREAKOUT,
        error_type="ValueError",
        error_message=BREAKOUT + HTML_IN_ERROR,
    )
    failure = {
        "event": "task_failed",
        "timestamp": stamp(0.4),
        "task": "boom",
        "key": "b-2",
        "worker": "tcp://w:2",
        "attempt": 1,
        "error_type": "ValueError",
        "error_message": BREAKOUT + HTML_IN_ERROR,
        "traceback": BREAKOUT,
    }
    workers = [
        {
            "event": "worker_added",
            "timestamp": stamp(0),
            "worker": "tcp://w:1",
            "worker_name": "<b>w1</b>",
            "nthreads": 1,
        },
        {
            "event": "worker_added",
            "timestamp": stamp(0),
            "worker": "tcp://w:2",
            "worker_name": BREAKOUT,
            "nthreads": 1,
        },
    ]
    resources = [
        {
            "event": "resource_sample",
            "timestamp": stamp(t),
            "worker": w,
            "worker_name": "x",
            "cpu_percent": 50.0,
            "memory_bytes": 2**27,
        }
        for t in (0.1, 0.6)
        for w in ("tcp://w:1", "tcp://w:2")
    ]
    cache = [
        {
            "event": "cache_lookup",
            "timestamp": stamp(0.3),
            "function": BREAKOUT,
            "result": "hit",
            "lookup_s": 0.001,
            "saved_s": 0.5,
            "compute_s": 0.5,
        }
    ]
    meta = {
        "status": "failed",
        "project": BREAKOUT,
        "target": "<i>local</i>",
        "start_time": stamp(0),
        "end_time": stamp(1),
        "duration_s": 1.0,
    }
    run_dir = write_run(
        tmp_path,
        "run-20261128T120000Z-evil-0123abcd",
        meta,
        tasks=tasks,
        failures=[failure],
        workers=workers,
        resources=resources,
        cache=cache,
    )
    page = write_html_report(load_run(run_dir.name, tmp_path), tmp_path / "evil.html")
    text = page.read_text()
    assert BREAKOUT not in text and "<svg onload" not in text and "<b>w1" not in text
    data = text.split('<script type="application/json" id="run-data">', 1)[1]
    data = json.loads(data.split("</script>", 1)[0])  # the only </script> ends the block
    assert BREAKOUT in data["bars"]["args"][0] and data["tasks"].count(BREAKOUT) == 1

    dom, requests, console = render(page, tmp_path)
    bars = dom.with_class("task-bar", "rect")
    assert sorted(b["data-key"] for b in bars) == sorted(["a-1", evil_key, "b-2"])
    assert dom.by_id("timeline")["data-drawn-tasks"] == "3"
    assert [b["data-key"] for b in bars if "failed" in b["class"]] == ["b-2"]
    assert_two_scripts(dom)
    for tag in ("img", "b", "i"):
        assert dom.tags(tag) == [], tag
    assert dom.tags("svg") and all(not a.get("onload") for a in dom.tags("svg"))
    assert not [attrs for _, attrs in dom.elements if any(k.startswith("on") for k in attrs)]
    assert_offline(dom, requests, console)


def test_empty_and_unfinished_runs_render(tmp_path):
    """A run just started (run.json only, empty files) and a run cut short mid-task."""
    empty = write_run(tmp_path, "run-20261128T120000Z-empty-00000000", {"status": "running"})
    loaded = load_run(empty.name, tmp_path)
    assert loaded.tasks.empty and list(loaded.tasks.columns) == []
    page = write_html_report(loaded, tmp_path / "empty.html")
    assert "No task failed." in page.read_text()
    assert "No cache lookups in this run." in page.read_text()

    tasks = task_lines("done-1", "step", "tcp://w:1", 0.0, 0.5)
    tasks += task_lines("run-2", "step", "tcp://w:1", 0.6, 0.0)[:2]  # started, never ended
    tasks.append({"event": "task_submitted", "timestamp": stamp(0.7), "task": "step", "key": "q"})
    cut = write_run(
        tmp_path,
        "run-20261128T120000Z-cut-00000001",
        None,  # no run.json at all
        tasks=tasks,
        resources=[{"event": "resource_sample", "timestamp": stamp(0.2), "worker": "tcp://w:1"}],
    )
    unfinished = write_html_report(load_run(cut.name, tmp_path), tmp_path / "cut.html")

    dom, requests, console = render(page, tmp_path)
    assert dom.by_id("timeline")["data-drawn-tasks"] == "0"
    assert dom.by_id("resources")["data-drawn-workers"] == "0"
    assert dom.by_id("durations")["data-drawn-task-names"] == "0"
    assert_offline(dom, requests, console)

    dom, requests, console = render(unfinished, tmp_path)
    bars = {b["data-key"]: b["class"].split() for b in dom.with_class("task-bar", "rect")}
    # the one attempt that ended is the whole critical path
    done = ["task-bar", "completed", "critical"]
    assert bars == {"done-1": done, "run-2": ["task-bar", "unfinished"]}
    assert dom.by_id("resources")["data-drawn-workers"] == "0"  # a sample with no figures
    assert dom.by_id("durations")["data-drawn-task-names"] == "1"
    assert_offline(dom, requests, console)


def embedded(text: str) -> dict:
    """The JSON data block of a report page."""
    return json.loads(text.split('id="run-data">', 1)[1].split("</script>", 1)[0])


def test_attempts_are_matched_by_key_and_attempt(tmp_path):
    """Lost, retried, cancelled and concurrent attempts each get their own bar and end."""

    def line(event, t, key, worker=None, attempt=1, **extra):
        return {
            "event": event,
            "timestamp": stamp(t),
            "task": key.split("-")[0],
            "key": key,
            "worker": worker,
            "attempt": attempt,
            **extra,
        }

    tasks = [
        # attempt 1 dies with its worker, attempt 2 completes elsewhere
        line("task_started", 0.1, "crash-1", "tcp://a:1"),
        line("task_started", 0.6, "crash-1", "tcp://b:1", attempt=2),
        line("task_completed", 1.0, "crash-1", "tcp://b:1", attempt=2, duration_s=0.4),
        # retried once on the same worker, then completes
        line("task_started", 0.7, "retry-2", "tcp://b:1"),
        line("task_started", 0.9, "retry-2", "tcp://b:1", attempt=2),
        line("task_completed", 1.1, "retry-2", "tcp://b:1", attempt=2, duration_s=0.2),
        # cancelled while running; two at once on the two-thread worker b
        line("task_started", 1.2, "cancel-3", "tcp://b:1"),
        line("task_cancelled", 1.5, "cancel-3", "tcp://b:1"),
        line("task_started", 1.3, "both-4", "tcp://b:1"),
        line("task_completed", 1.4, "both-4", "tcp://b:1", duration_s=0.1),
        # a dependency failure never ran: no bar
        line("task_failed", 1.6, "dep-5", None, duration_s=0.0, error_type="ValueError"),
    ]
    resources = [
        {
            "event": "task_resources",
            "timestamp": stamp(0.85),
            "key": "retry-2",
            "worker": "tcp://b:1",
            "wall_s": 0.05,
        }
    ]
    workers = [
        {
            "event": "worker_added",
            "timestamp": stamp(0),
            "worker": "tcp://a:1",
            "worker_name": "0",
            "nthreads": 1,
        },
        {
            "event": "worker_added",
            "timestamp": stamp(0),
            "worker": "tcp://b:1",
            "worker_name": "1",
            "nthreads": 2,
        },
        {
            "event": "worker_crashed",
            "timestamp": stamp(0.5),
            "worker": "tcp://a:1",
            "worker_name": "0",
            "nthreads": 1,
            "reason": "connection to the worker lost",
        },
    ]
    meta = {"status": "completed", "start_time": stamp(0), "end_time": stamp(2)}
    run_dir = write_run(
        tmp_path,
        "run-20261128T120000Z-match-00000002",
        meta,
        tasks=tasks,
        resources=resources,
        workers=workers,
    )
    data = embedded(html_report(load_run(run_dir.name, tmp_path)))
    bars = data["bars"]
    got = {
        (k, a): (st, s, e, data["workers"][w]["name"], lane)
        for k, a, st, s, e, w, lane in zip(
            bars["key"],
            bars["attempt"],
            bars["status"],
            bars["start"],
            bars["end"],
            bars["w"],
            bars["lane"],
        )
    }
    assert got == {
        ("crash-1", 1): ("lost", 0.1, 0.5, "0", 0),  # ends when its worker crashed
        ("crash-1", 2): ("completed", 0.6, 1.0, "1", 0),
        ("retry-2", 1): ("lost", 0.7, 0.75, "1", 1),  # start + wall_s of its measurement
        ("retry-2", 2): ("completed", 0.9, 1.1, "1", 1),
        ("cancel-3", 1): ("cancelled", 1.2, 1.5, "1", 0),
        ("both-4", 1): ("completed", 1.3, 1.4, "1", 1),  # the worker's second thread
    }
    assert [w["lanes"] for w in data["workers"]] == [1, 2]
    assert data["workers"][0]["end"] == "crashed" and data["workers"][0]["ended"] == 0.5


def test_very_large_runs_draw_a_capped_timeline(tmp_path):
    """Over MAX_BARS attempts, the file keeps every failed attempt and the longest others.

    (Drawing the 20,000 bars of this page in headless Chromium takes about 3 s more than a
    small page; the test stays with the file to keep the suite fast.)
    """
    n = MAX_BARS + 5_000
    tasks = []
    for i in range(n):
        start = i * 0.01
        outcome = "task_failed" if i % 1000 == 0 else "task_completed"
        length = 0.005 + (i % 97) * 1e-4
        common = {"task": f"f{i % 3}", "key": f"t-{i}", "worker": f"tcp://w:{i % 4}", "attempt": 1}
        tasks.append({"event": "task_started", "timestamp": stamp(start), **common})
        tasks.append(
            {"event": outcome, "timestamp": stamp(start + length), "duration_s": length, **common}
        )
    run_dir = write_run(
        tmp_path, "run-20261128T120000Z-big-0000000f", {"status": "failed"}, tasks=tasks
    )
    run = load_run(run_dir.name, tmp_path)
    began = time.monotonic()
    text = html_report(run)
    build_s = time.monotonic() - began
    data = embedded(text)
    bars = data["bars"]
    assert data["bars_total"] == n and len(bars["key"]) == MAX_BARS
    assert bars["status"].count("failed") == n // 1000  # every failed attempt is kept
    # the longest completed attempts fill the rest of the cap
    kept = [e - s for s, e, st in zip(bars["start"], bars["end"], bars["status"]) if st != "failed"]
    longest = sorted((0.005 + (i % 97) * 1e-4 for i in range(n) if i % 1000), reverse=True)
    assert min(kept) >= longest[len(kept) - 1] - 2e-6
    assert 'id="timeline-cap"' in text
    assert f"draws {MAX_BARS:,} of them" in text and f"{n:,} attempts" in text
    assert sum(d["n"] for d in data["durations"]) == n  # durations use every attempt
    assert len(text) < 4_000_000 and build_s < 15
