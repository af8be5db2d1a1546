"""Dask's `span()` blocks as groups: the group spans of the trace, the group fields of
tasks.jsonl, and the figures read back per group, from real runs on a LocalCluster."""

import distributed
import orjson
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scalable_otel import PipelineOptions, ScalableSession
from scalable_otel import semconv as sc
from tests import workloads
from tests.conftest import events, read_jsonl, wait_for

CALIBRATION = ["calibration"]
REGION = ["calibration", "region-3"]
VALIDATION = ["validation"]


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """A run with tasks outside any block, in nested `distributed.span` blocks (one of
    them failing) and in a `session.span` block; each block's tasks of their own function,
    as Dask puts a task group (one function's tasks) in one span."""
    exporter = InMemorySpanExporter()
    root = tmp_path_factory.mktemp("groups")
    ids = {}
    with ScalableSession(
        target="local",
        n_workers=2,
        threads_per_worker=1,
        project="groups",
        runs_dir=root / "runs",
        cache_dir=root / "cache",
        pipeline=PipelineOptions(span_processors=[SimpleSpanProcessor(exporter)]),
    ) as s:
        assert s.gather(s.map(workloads.inc, [1, 2])) == [2, 3]
        with distributed.span("calibration") as ids["calibration"]:
            s.gather(s.map(workloads.sleep_then, [1, 2], seconds=0.05))
            with distributed.span("region-3") as ids["region-3"]:
                assert s.gather(s.map(workloads.add, [1, 2], [3, 4])) == [4, 6]
                with pytest.raises(ValueError):
                    s.gather(s.submit(workloads.fail, 7))
        with s.span("validation") as ids["validation"]:
            s.gather(s.submit(workloads.burn_cpu, 0.01))
        wait_for(lambda: events(s.run_dir, event="task_failed"))
    return s, ids, exporter.get_finished_spans()


def _by_task(lines):
    by = {}
    for line in lines:
        by.setdefault(line["task"], []).append(line)
    return by


def test_every_task_line_names_its_innermost_block(grouped):
    s, ids, _ = grouped
    expected = {
        "inc": (None, None),
        "sleep_then": (ids["calibration"], CALIBRATION),
        "add": (ids["region-3"], REGION),
        "fail": (ids["region-3"], REGION),
        "burn_cpu": (ids["validation"], VALIDATION),
    }
    by_task = _by_task(events(s.run_dir))
    assert set(by_task) == set(expected)
    for task, lines in by_task.items():
        kinds = {line["event"] for line in lines}
        assert {"task_submitted", "task_started"} <= kinds, (task, kinds)
        for line in lines:
            assert (line["group"], line["group_path"]) == expected[task], line
    (failure,) = events(s.run_dir, "failures.jsonl")
    assert (failure["group"], failure["group_path"]) == (ids["region-3"], REGION)
    graph = orjson.loads((s.run_dir / "plan.json").read_bytes())["graph"]
    assert len(graph) == 8
    for entry in graph:
        group, path = expected[entry["task"]]
        assert (entry.get("group"), entry.get("group_path")) == (group, path), entry


def _group_spans(spans):
    return {
        tuple(span.attributes[sc.GROUP_PATH]): span
        for span in spans
        if span.attributes.get(sc.KIND) == sc.KIND_GROUP
    }


def test_blocks_become_group_spans_between_the_run_and_its_tasks(grouped):
    s, ids, spans = grouped
    (run,) = [span for span in spans if span.name == sc.SPAN_RUN]
    groups = _group_spans(spans)
    assert set(groups) == {tuple(CALIBRATION), tuple(REGION), tuple(VALIDATION)}
    calibration, region, validation = (groups[tuple(p)] for p in (CALIBRATION, REGION, VALIDATION))
    assert [calibration.name, region.name, validation.name] == [
        "calibration",
        "region-3",
        "validation",
    ]
    assert calibration.parent.span_id == run.context.span_id
    assert validation.parent.span_id == run.context.span_id
    assert region.parent.span_id == calibration.context.span_id
    for span, block in ((calibration, "calibration"), (region, "region-3")):
        assert span.attributes[sc.GROUP_ID] == ids[block]
        assert span.context.trace_id == run.context.trace_id

    tasks = [span for span in spans if span.attributes.get(sc.KIND) == sc.KIND_TASK]
    parent_of = {span.name: span.parent.span_id for span in tasks}
    assert parent_of["inc"] == run.context.span_id
    assert parent_of["sleep_then"] == calibration.context.span_id
    assert parent_of["add"] == parent_of["fail"] == region.context.span_id
    assert parent_of["burn_cpu"] == validation.context.span_id
    for span in tasks:
        if span.name != "inc":
            assert span.attributes[sc.GROUP_ID] == span_group_id(groups, span)
    executes = [span for span in spans if span.attributes.get(sc.KIND) == sc.KIND_EXECUTE]
    assert {tuple(span.attributes.get(sc.GROUP_PATH) or ()) for span in executes if span.name} >= {
        (),
        tuple(CALIBRATION),
        tuple(REGION),
        tuple(VALIDATION),
    }

    # a block covers its tasks and its nested blocks: from the first submission seen in it
    # to the last end of a task in it
    def within(group, members):
        return group.start_time == min(m.start_time for m in members) and group.end_time == max(
            m.end_time for m in members
        )

    in_region = [span for span in tasks if span.name in ("add", "fail")]
    in_calibration = [span for span in tasks if span.name == "sleep_then"] + in_region
    assert within(region, in_region)
    assert within(calibration, in_calibration)
    assert within(validation, [span for span in tasks if span.name == "burn_cpu"])


def span_group_id(groups, span):
    return groups[tuple(span.attributes[sc.GROUP_PATH])].attributes[sc.GROUP_ID]


def test_the_run_s_otlp_file_holds_the_group_spans(grouped):
    """`scalable export --otlp` replays traces.otlp.jsonl: the group spans are in it."""
    s, ids, _ = grouped
    found = {}
    for request in read_jsonl(s.run_dir / "traces.otlp.jsonl"):
        for resource in request["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                for span in scope["spans"]:
                    attrs = {a["key"]: a["value"] for a in span.get("attributes", ())}
                    if attrs.get(sc.KIND, {}).get("stringValue") == sc.KIND_GROUP:
                        found[attrs[sc.GROUP_ID]["stringValue"]] = span["name"]
    assert found == {
        ids["calibration"]: "calibration",
        ids["region-3"]: "region-3",
        ids["validation"]: "validation",
    }


def test_a_run_without_blocks_has_null_groups(project_dir):
    with ScalableSession(target="local", n_workers=1, threads_per_worker=1) as s:
        s.gather(s.map(workloads.inc, [1, 2]))
    lines = events(s.run_dir)
    assert lines and all(line["group"] is None and line["group_path"] is None for line in lines)
    assert b'"group"' in (s.run_dir / "tasks.jsonl").read_bytes()


def test_a_span_of_several_tags_is_nested_blocks(project_dir):
    """`span("a", "b")` is `span("a")` holding `span("b")`: two groups."""
    exporter = InMemorySpanExporter()
    with ScalableSession(
        target="local",
        n_workers=1,
        threads_per_worker=1,
        pipeline=PipelineOptions(span_processors=[SimpleSpanProcessor(exporter)]),
    ) as s:
        with s.span("outer", "inner") as inner_id:
            s.gather(s.submit(workloads.inc, 1))
    (line,) = events(s.run_dir, event="task_completed")
    assert (line["group"], line["group_path"]) == (inner_id, ["outer", "inner"])
    groups = _group_spans(exporter.get_finished_spans())
    assert groups[("outer", "inner")].parent.span_id == groups[("outer",)].context.span_id


def test_an_attached_client_s_blocks_are_grouped(project_dir, instrumentor):
    """Tasks of a plain Dask client instrumented by `DaskInstrumentor`."""
    from scalable_otel.rundir import list_runs

    instrumentor.instrument(runs_dir=project_dir / "runs")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        with distributed.span("attached") as span_id:
            assert client.submit(workloads.inc, 1).result() == 2
    (run_dir,) = list_runs(project_dir / "runs")
    lines = events(run_dir)
    assert lines and all(
        (line["group"], line["group_path"]) == (span_id, ["attached"]) for line in lines
    )


def test_group_lines_are_json_lists(grouped):
    s, _, _ = grouped
    raw = (s.run_dir / "tasks.jsonl").read_bytes().splitlines()
    assert any(b'"group_path":["calibration","region-3"]' in line for line in raw)
    assert orjson.loads(raw[0])["group_path"] is None


# --- the figures by group ---------------------------------------------------------------------
def _in(line, path):
    return (line["group_path"] or [])[: len(path)] == path if path else not line["group_path"]


def _stamp(line):
    from scalable_otel.rundir import parse_iso

    return parse_iso(line["timestamp"])


def test_the_report_s_groups_are_the_lines_figures(grouped):
    import statistics

    from scalable_otel.analysis import load_run
    from scalable_otel.analysis.report import format_report, report

    s, _, _ = grouped
    summary = report(load_run(s.run_dir))
    groups = summary["groups"]
    assert [g["path"] for g in groups] == [CALIBRATION, REGION, VALIDATION, []]
    lines = events(s.run_dir)
    ends = ("task_completed", "task_failed")
    run_busy = sum(line["duration_s"] for line in lines if line["event"] in ends)
    for g in groups:
        mine = [line for line in lines if _in(line, g["path"])]
        ended = [line for line in mine if line["event"] in ends]
        completed = [line["duration_s"] for line in mine if line["event"] == "task_completed"]
        started = [_stamp(line) for line in mine if line["event"] == "task_started"]
        assert g["submitted"] == sum(line["event"] == "task_submitted" for line in mine)
        assert g["completed"] == len(completed)
        assert g["failed"] == sum(line["event"] == "task_failed" for line in mine)
        assert g["busy_s"] == pytest.approx(sum(line["duration_s"] for line in ended))
        assert g["share"] == pytest.approx(g["busy_s"] / run_busy)
        assert g["median_duration_s"] == pytest.approx(statistics.median(completed))
        wall = max(_stamp(line) for line in ended) - min(started)
        assert g["wall_s"] == pytest.approx(wall, abs=1e-6)
    by_path = {tuple(g["path"]): g for g in groups}
    assert by_path[tuple(CALIBRATION)]["submitted"] == 5  # its own 2 and region-3's 3
    assert by_path[tuple(REGION)]["failed"] == by_path[tuple(CALIBRATION)]["failed"] == 1
    assert by_path[tuple(REGION)]["blocks"] == 1
    # the top-level groups and the tasks outside any share the run's task time
    assert sum(g["share"] for g in groups if g["depth"] <= 1) == pytest.approx(1.0)

    text = format_report(summary)
    section = text.split("\nGroups:", 1)[1].splitlines()
    names = [row.split()[0] for row in section[1:5]]
    assert names == ["calibration", "region-3", "validation", "(no"]
    assert section[2].startswith("    region-3")  # nested under calibration


def test_a_report_without_groups_has_no_groups_section(project_dir):
    from scalable_otel.analysis import load_run
    from scalable_otel.analysis.report import format_report, report

    with ScalableSession(target="local", n_workers=1, threads_per_worker=1) as s:
        s.gather(s.map(workloads.inc, [1, 2]))
    summary = report(load_run(s.run_dir))
    assert summary["groups"] == []
    assert "Groups" not in format_report(summary)


def test_advise_trends_compare_and_the_page_by_group(grouped):
    from scalable_otel.analysis import load_run
    from scalable_otel.analysis.advise import advise_all
    from scalable_otel.analysis.compare import compare, format_compare, format_compare_markdown
    from scalable_otel.analysis.html import html_report
    from scalable_otel.analysis.trends import format_trends, trends

    s, _, _ = grouped
    runs_dir = s.run_dir.parent
    measured = [  # the session has closed: every measurement is written
        line
        for line in events(s.run_dir, "resources.jsonl", "task_resources")
        if line["task"] in ("add", "fail")
    ]
    advice = {a.task: a for a in advise_all(runs_dir, group=REGION)}
    assert set(advice) == {line["task"] for line in measured} and "add" in advice
    assert advice["add"].observations == sum(line["task"] == "add" for line in measured)
    assert "sleep_then" in {a.task for a in advise_all(runs_dir, group=CALIBRATION)}

    history = trends(runs_dir, group=VALIDATION)
    (row,) = history.runs
    assert row.durations == 1 and [t.task for t in history.tasks] == ["burn_cpu"]
    assert "of group validation" in format_trends(history)

    run = load_run(s.run_dir)
    result = compare(run, run)
    assert [g["path"] for g in result["groups"]] == [CALIBRATION, REGION, VALIDATION, []]
    assert all(g["busy_s"]["change_pct"] == 0 for g in result["groups"] if g["busy_s"]["a"])
    assert "Groups (busy time" in format_compare(result)
    markdown = format_compare_markdown(result)
    assert "| Group |" in markdown and "| calibration / region-3 |" in markdown

    page = html_report(run)
    assert 'id="groups-table"' in page and ">region-3</td>" in page
    # the timeline's legend: a row per block, with the task names submitted in it
    from scalable_otel.analysis.html.figures import figures, payload

    legend = {g["label"]: g["tasks"] for g in payload(figures(run))["groups"]}
    names = payload(figures(run))["tasks"]
    assert {label: sorted(names[i] for i in tasks) for label, tasks in legend.items()} == {
        "calibration": ["sleep_then"],
        "calibration / region-3": ["add", "fail"],
        "validation": ["burn_cpu"],
        "(no group)": ["inc"],
    }
