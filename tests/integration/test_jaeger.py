"""Traces in a real Jaeger v2 (built by servers/build, started on loopback ports by
go_servers.py): sessions exporting over OTLP/gRPC and OTLP/HTTP, a run with a failing
task, `scalable export --otlp` of a recorded run into a fresh Jaeger, and the trace's
page in Jaeger's UI in headless Chromium.

Every span is read back through Jaeger's own query API (`/api/traces/<id>`, what its UI
reads) and compared whole with the run's traces.otlp.jsonl, translated as Jaeger
translates OTLP: attributes become typed tags, the status becomes `otel.status_code`,
`otel.status_description` and `error` tags, the kind `span.kind`, the scope
`otel.scope.*`, events become logs, the parent a CHILD_OF reference, the resource the
span's process (its `service.name` the service), times microseconds.
"""

from __future__ import annotations

import json
import os
import subprocess
from html.parser import HTMLParser

import pytest

from scalable_otel import ExportOptions, ScalableSession
from tests import workloads
from tests.conftest import events
from tests.integration.go_servers import (
    jaeger,  # noqa: F401  (the fixture)
    require_jaeger_ui,
    start_jaeger,
)
from tests.integration.otlp_checks import (
    check_backend_has_the_run,
    export_otlp,
    file_spans_in_context,
    run_json,
)
from tests.test_html_report import chromium_binary
from tests.test_task_context import traced_work

# the real servers built by servers/build (see .ci/run)
pytestmark = pytest.mark.go_servers

SERVICE = "scalable-otel"  # a session's service.name unless OTEL_SERVICE_NAME says
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
# Jaeger's query service warns of a child outside its parent's time with this
CLOCK_SKEW = "clock skew adjustment disabled"


# --- OTLP/JSON as Jaeger shows it -----------------------------------------------------------
def _tag(key: str, value: dict) -> tuple:
    """An OTLP/JSON attribute as Jaeger's typed tag (key, type, value)."""
    if "stringValue" in value:
        return key, "string", value["stringValue"]
    if "boolValue" in value:
        return key, "bool", value["boolValue"]
    if "intValue" in value:
        return key, "int64", int(value["intValue"])
    if "doubleValue" in value:
        return key, "float64", float(value["doubleValue"])
    if "arrayValue" in value or "kvlistValue" in value:
        return key, "string", json.dumps(_plain(value), separators=(",", ":"))
    raise AssertionError(f"attribute {key} of a kind this test does not translate: {value}")


def _plain(value: dict):
    if "arrayValue" in value:
        return [_plain(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return {kv["key"]: _plain(kv["value"]) for kv in value["kvlistValue"].get("values", [])}
    return _tag("", value)[2]


def _tags(attributes) -> list[tuple]:
    return [_tag(a["key"], a["value"]) for a in attributes or ()]


def as_jaeger(resource: dict, scope: dict, span: dict) -> dict:
    """What Jaeger's query API must show for one span of traces.otlp.jsonl."""
    for dropped in ("droppedAttributesCount", "droppedEventsCount", "droppedLinksCount"):
        assert dropped not in span, (dropped, span)  # a count this translation leaves out
    tags = _tags(span.get("attributes"))
    if span.get("kind") in KINDS:
        tags.append(("span.kind", "string", KINDS[span["kind"]]))
    if scope.get("name"):
        tags.append(("otel.scope.name", "string", scope["name"]))
    if scope.get("version"):
        tags.append(("otel.scope.version", "string", scope["version"]))
    status = span.get("status") or {}
    if status.get("code") == 2:
        tags += [("otel.status_code", "string", "ERROR"), ("error", "bool", True)]
    elif status.get("code") == 1:
        tags.append(("otel.status_code", "string", "OK"))
    if status.get("message"):
        tags.append(("otel.status_description", "string", status["message"]))
    if span.get("traceState"):
        tags.append(("w3c.tracestate", "string", span["traceState"]))
    references = [
        ("FOLLOWS_FROM", link["traceId"], link["spanId"]) for link in span.get("links", ())
    ]
    if span.get("parentSpanId"):
        references.append(("CHILD_OF", span["traceId"], span["parentSpanId"]))
    process = _tags(resource.get("attributes"))
    service = next((t[2] for t in process if t[0] == "service.name"), None)
    start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
    return {
        "traceID": span["traceId"],
        "spanID": span["spanId"],
        "operationName": span["name"],
        "references": sorted(references),
        "startTime": start // 1000,
        "duration": (end - start) // 1000,
        "tags": sorted(tags),
        "logs": sorted(
            (
                int(event["timeUnixNano"]) // 1000,
                sorted(
                    [("event", "string", event.get("name", "")), *_tags(event.get("attributes"))]
                ),
            )
            for event in span.get("events", ())
        ),
        "service": service,
        "process": sorted(t for t in process if t[0] != "service.name"),
    }


def shown_by_jaeger(trace: dict) -> dict[str, dict]:
    """Jaeger's spans of one trace in the form of `as_jaeger`, by span id."""
    processes = trace["processes"]
    shown = {}
    for span in trace["spans"]:
        process = processes[span["processID"]]
        shown[span["spanID"]] = {
            "traceID": span["traceID"],
            "spanID": span["spanID"],
            "operationName": span["operationName"],
            "references": sorted(
                (r["refType"], r["traceID"], r["spanID"]) for r in span["references"]
            ),
            "startTime": span["startTime"],
            "duration": span["duration"],
            "tags": sorted((t["key"], t["type"], t["value"]) for t in span["tags"]),
            "logs": sorted(
                (log["timestamp"], sorted((f["key"], f["type"], f["value"]) for f in log["fields"]))
                for log in span["logs"]
            ),
            "service": process["serviceName"],
            "process": sorted((t["key"], t["type"], t["value"]) for t in process.get("tags") or ()),
        }
    return shown


class InJaeger:
    """A Jaeger as `check_backend_has_the_run` reads a backend."""

    def __init__(self, server):
        self.server = server
        self.port = server.ports["http"]
        self.grpc_port = server.ports["grpc"]

    def spans(self, trace_id_hex: str, expect: int) -> list[dict]:
        trace = self.server.trace(trace_id_hex, expect)
        return [
            {
                "span_id": span["spanID"],
                "parent_span_id": next(
                    (r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"), None
                ),
                "name": span["operationName"],
            }
            for span in trace["spans"]
        ]


def check_jaeger_has_the_run(server, run_dir, service=SERVICE) -> dict:
    """The run is one trace in Jaeger, the run span at its root, every span as the run
    directory's traces.otlp.jsonl has it. Returns Jaeger's spans by id."""
    check_backend_has_the_run(InJaeger(server), run_dir)
    meta = run_json(run_dir)
    recorded = [as_jaeger(*found) for found in file_spans_in_context(run_dir)]
    trace = server.trace(meta["trace_id"], len(recorded))
    shown = shown_by_jaeger(trace)
    assert len(shown) == len(trace["spans"]) == len(recorded)
    for expected in recorded:
        assert shown[expected["spanID"]] == expected
    roots = [s for s in shown.values() if not s["references"]]
    assert [r["operationName"] for r in roots] == ["scalable.run"]
    assert {s["service"] for s in shown.values()} == {service}
    check_one_trace(server, meta, service)
    # Jaeger warns of a child outside its parent's time: only an execution may be, by
    # the error of Dask's estimate of the worker's clock (the spans inside it are moved
    # by the same estimate, so they are not)
    for span in trace["spans"]:
        warnings = span.get("warnings") or ()
        assert all(CLOCK_SKEW in w for w in warnings), span
        assert not warnings or span["operationName"] == "execute", span
    return shown


def check_one_trace(server, meta: dict, service: str = SERVICE) -> None:
    """Jaeger's search by the run's id (as a user would search) finds one trace: the
    run's trace id of run.json, under the service."""
    assert service in server.api("services")["data"]
    found = server.api(
        "traces", service=service, tags=json.dumps({"scalable.run.id": meta["run_id"]})
    )["data"]
    assert [t["traceID"] for t in found] == [meta["trace_id"]]


def tagged(span: dict, key: str):
    return next((value for k, _, value in span["tags"] if k == key), None)


def work(session) -> None:
    """Spans inside tasks, plain tasks, and one task that fails."""
    session.gather(session.map(traced_work, range(2)))
    session.gather(session.map(workloads.sleep_then, [1, 2], seconds=0.05))
    with pytest.raises(ValueError, match="bad input 3"):
        session.submit(workloads.fail, 3).result()


@pytest.fixture(scope="module")
def grpc_run(tmp_path_factory):
    """A session that exports to a Jaeger over OTLP/gRPC, set by ExportOptions; the
    Jaeger stays up for the module's tests. Yields (jaeger, run_dir)."""
    root = tmp_path_factory.mktemp("jaeger-grpc")
    server = start_jaeger(root / "jaeger")
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in list(os.environ):
                if name.startswith(("OTEL_", "SCALABLE_")) and name not in (
                    "SCALABLE_JAEGER",
                    "SCALABLE_CI",
                ):
                    patch.delenv(name)
            patch.chdir(root)
            with ScalableSession(
                target="local",
                n_workers=1,
                project="jaeger-grpc",
                exports=ExportOptions(
                    otlp_endpoint=server.otlp_grpc,
                    otlp_protocol="grpc",
                    metrics_exporter="none",  # Jaeger takes traces only
                    logs_exporter="none",
                ),
            ) as session:
                work(session)
        yield server, session.run_dir
    finally:
        server.stop()


def test_a_grpc_session_is_one_trace_in_jaeger_as_its_run_directory_has_it(grpc_run):
    server, run_dir = grpc_run
    shown = check_jaeger_has_the_run(server, run_dir)
    [failure] = events(run_dir, event="task_failed")
    failed = shown[failure["span_id"]]
    assert failed["operationName"] == "fail"
    assert tagged(failed, "error") is True
    assert tagged(failed, "otel.status_code") == "ERROR"
    assert "bad input 3" in tagged(failed, "otel.status_description")
    [execution] = [
        s for s in shown.values() if ("CHILD_OF", s["traceID"], failed["spanID"]) in s["references"]
    ]
    assert execution["operationName"] == "execute" and tagged(execution, "error") is True
    logged = [dict((k, v) for k, _, v in fields) for _, fields in failed["logs"]]
    assert any(
        log["event"] == "exception" and log["exception.type"] == "ValueError" for log in logged
    )


def test_an_http_session_from_otel_variables_is_one_trace_in_jaeger(
    jaeger,  # noqa: F811
    project_dir,
    monkeypatch,
):
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "lulcc-pipeline")
    with ScalableSession(target="local", n_workers=1, project="jaeger-http") as session:
        session.gather(session.map(traced_work, range(2)))
    shown = check_jaeger_has_the_run(jaeger, session.run_dir, service="lulcc-pipeline")
    assert {s["operationName"] for s in shown.values()} >= {"traced_work", "execute", "prepare"}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_replayed_run_is_the_same_trace_in_a_fresh_jaeger(grpc_run, jaeger, protocol):  # noqa: F811
    """`scalable export --otlp` of the run sent live: the fresh Jaeger shows the trace
    the live one shows, ids, parents, tags, logs and times alike."""
    live, run_dir = grpc_run
    meta = run_json(run_dir)
    count = len(file_spans_in_context(run_dir))
    endpoint = jaeger.otlp_grpc if protocol == "grpc" else jaeger.otlp_http

    result = export_otlp(run_dir, endpoint, protocol)

    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Sent {count} spans of {run_dir.name} to ")
    replayed = shown_by_jaeger(jaeger.trace(meta["trace_id"], count))
    assert replayed == shown_by_jaeger(live.trace(meta["trace_id"], count))
    check_one_trace(jaeger, meta)


# --- Jaeger's UI ----------------------------------------------------------------------------
class Rendered(HTMLParser):
    """A page's DOM as Chromium serialized it once its scripts ran: every element with
    its classes, attributes and all the text inside it."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self._open: list[dict] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        row = attrs.get("data-item-key") or (self._open[-1]["row"] if self._open else None)
        element = {
            "tag": tag,
            "classes": set((attrs.get("class") or "").split()),
            "attrs": attrs,
            "row": row,
            "text": [],
        }
        self.elements.append(element)
        if tag not in self.VOID:
            self._open.append(element)

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for element in self._open:
            element["text"].append(data)

    def text(self, element) -> str:
        return "".join(element["text"]).strip()

    def having(self, cls: str) -> list[dict]:
        return [e for e in self.elements if cls in e["classes"]]


def trace_page(url: str, folder) -> dict:
    """The trace page Jaeger's UI renders in headless Chromium: its title, the header's
    figures, and one row a span (by span id: name, service, depth in the tree, error
    icon). Fails on an error page or a message in the console."""
    result = subprocess.run(
        [
            chromium_binary(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={folder / 'chromium-profile'}",
            "--virtual-time-budget=15000",
            "--window-size=1400,3000",  # tall: the span list draws only the rows in view
            "--enable-logging=stderr",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    page = Rendered(result.stdout)
    errors = [page.text(e) for e in page.having("ErrorMessage")]
    assert not errors, f"Jaeger's UI shows an error at {url}: {errors}"
    assert console == [], console
    [title] = [page.text(e) for e in page.elements if e["tag"] == "title"]
    figures = {}
    for i, element in enumerate(page.elements):
        if "LabeledList--label" in element["classes"]:
            value = next(e for e in page.elements[i + 1 :] if e["tag"] == "strong")
            figures[page.text(element)] = page.text(value)
    rows: dict[str, dict] = {}
    for element in page.elements:
        key = element["row"] or ""
        if not key.endswith("--bar"):
            continue
        row = rows.setdefault(key.removesuffix("--bar"), {"depth": 0, "error": False})
        if "SpanTreeOffset--indentGuide" in element["classes"]:
            row["depth"] += 1
        if "SpanBarRow--errorIcon" in element["classes"]:
            row["error"] = True
        if "endpoint-name" in element["classes"]:
            row["name"] = page.text(element)
        if "span-svc-name" in element["classes"]:
            row["service"] = page.text(element)
    header = [page.text(e) for e in page.having("TraceName")]
    return {"title": title, "header": header, "figures": figures, "rows": rows}


def test_jaegers_ui_draws_the_runs_trace(grpc_run, tmp_path):
    """The trace's page in Jaeger's UI (`/trace/<id>`), rendered by headless Chromium:
    the header names the run span and counts the run's spans, one service and the depth
    of the tree; a row a span, each task under the run, the failed ones marked."""
    require_jaeger_ui()
    server, run_dir = grpc_run
    meta = run_json(run_dir)
    recorded = {s["spanId"]: s for _, _, s in file_spans_in_context(run_dir)}
    server.trace(meta["trace_id"], len(recorded))

    def depth(span):
        parent = span.get("parentSpanId")
        return 1 if not parent else 1 + depth(recorded[parent])

    page = trace_page(f"{server.ui}/trace/{meta['trace_id']}", tmp_path)

    # the title starts with an emoji the UI picks at random
    assert page["title"].endswith(f"{meta['trace_id'][:7]}: scalable.run ({SERVICE}) — Jaeger UI")
    assert page["header"] == [f"{SERVICE}: scalable.run"]
    tasks = events(run_dir, event="task_completed") + events(run_dir, event="task_failed")
    workers = events(run_dir, "workers.jsonl", "worker_added")
    traced = [t for t in tasks if t["task"] == "traced_work"]
    assert len(recorded) == 1 + len(workers) + 2 * len(tasks) + 2 * len(traced)
    assert page["figures"]["Total Spans"] == str(len(recorded))
    assert page["figures"]["Services"] == "1"
    assert page["figures"]["Depth"] == str(max(depth(s) for s in recorded.values()))
    assert page["rows"] == {
        span_id: {
            "depth": depth(span),
            "error": (span.get("status") or {}).get("code") == 2,
            "name": span["name"],
            "service": SERVICE,
        }
        for span_id, span in recorded.items()
    }
    under_the_run = [r["name"] for r in page["rows"].values() if r["depth"] == 2]
    assert sorted(under_the_run) == sorted(["worker"] * len(workers) + [t["task"] for t in tasks])
    assert [r["name"] for r in page["rows"].values() if r["error"]] == [
        "scalable.run",
        "fail",
        "execute",
    ]


def test_the_ui_check_sees_an_error_page(grpc_run, tmp_path):
    """What `trace_page` asserts is what the page shows: a trace Jaeger does not hold
    draws an error, which the check reports."""
    require_jaeger_ui()
    server, _ = grpc_run
    with pytest.raises(AssertionError, match="Jaeger.s UI shows an error.*trace not found"):
        trace_page(f"{server.ui}/trace/{'0' * 31}1", tmp_path)
