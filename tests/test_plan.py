"""plan.json's graph, kept up with tasks.jsonl while a run goes on."""

import os

import orjson

from scalable_otel import plan as plan_module
from scalable_otel.manifest import Manifest
from scalable_otel.plan import PlanGraph, graph_entry, plan_header
from scalable_otel.rundir import iter_lines
from tests import workloads
from tests.conftest import wait_for

MANIFEST = Manifest.from_dict(
    {
        "version": 1,
        "project": {"name": "p"},
        "targets": {"local": {"provider": "local"}},
        "components": {
            "sim": {"cpus": 4, "memory": "16G"},
            "gpu": {"cpus": 1, "memory": "2G", "gpus": 2},
        },
        "tasks": {"run_simulation": {"component": "sim"}},
    }
)
HEADER = plan_header(MANIFEST, run_id="run-x", target="local", provider="local")


def submitted(key, task="noop", deps=(), **extra):
    line = {"timestamp": "t", "event": "task_submitted", "task": task, "key": key}
    line |= {"args": {"s": "a\nb"}, "dependencies": list(deps), "reason": None, **extra}
    return orjson.dumps(line) + b"\n"


def other(key, event="task_completed"):
    return orjson.dumps({"event": event, "task": "noop", "key": key}) + b"\n"


def whole_read(run_dir):
    """The graph as the close used to build it: every line of tasks.jsonl read back."""
    graph = []
    for line in iter_lines(run_dir / "tasks.jsonl"):
        entry = graph_entry(line, MANIFEST, MANIFEST.task_requests())
        if entry is not None:
            graph.append(entry)
    return graph


def expected_bytes(graph):
    data = HEADER | {"graph": graph}
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"


def test_a_graph_followed_in_pieces_is_the_one_a_whole_read_gives_byte_for_byte(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    graph = PlanGraph(tmp_path, MANIFEST, HEADER)
    pieces = [
        submitted("a-1") + submitted("run_simulation-2", task="run_simulation"),
        other("a-1") + submitted("b-3", deps=["a-1", "run_simulation-2"]),
        submitted("a-1", reason="resubmit") + b"{torn\n" + b'{"event":"task_submitted", 1}\n',
        submitted("c-4", task="c", component="gpu") + submitted("d-5", component="nosuch"),
        submitted("e-6")[:30],  # a line still being written when the thread looks
        submitted("e-6")[30:] + other("e-6", "task_started"),
    ]
    caught = []
    for piece in pieces:
        with open(tasks, "ab") as f:
            f.write(piece)
        caught.append(graph.catch_up())
    assert caught == [2, 1, 0, 2, 0, 1]  # the torn last line waits for its newline
    with open(tasks, "ab") as f:
        f.write(submitted("f-7")[:-1])  # the run's last line lost its newline: still read
    graph.write()
    graph.close()
    plan = orjson.loads((tmp_path / "plan.json").read_bytes())
    assert [e["key"] for e in plan["graph"]] == ["a-1", "run_simulation-2", "b-3", "c-4"] + [
        "d-5",
        "e-6",
        "f-7",
    ]
    assert plan["graph"][1]["resources"] == {"cpus": 4, "memory": "16G"}
    assert plan["graph"][3] == {
        "key": "c-4",
        "task": "c",
        "dependencies": [],
        "component": "gpu",
        "resources": {"cpus": 1, "memory": "2G", "gpus": 2},
    }
    assert (tmp_path / "plan.json").read_bytes() == expected_bytes(whole_read(tmp_path))


def test_an_empty_or_missing_tasks_file_gives_an_empty_graph(tmp_path):
    graph = PlanGraph(tmp_path, MANIFEST, HEADER)
    assert graph.catch_up() == 0  # no tasks.jsonl yet
    graph.write()
    graph.close()
    assert (tmp_path / "plan.json").read_bytes() == expected_bytes([])


def test_the_spool_leaves_nothing_in_the_run_directory(tmp_path):
    (tmp_path / "tasks.jsonl").write_bytes(b"".join(submitted(f"k-{i}") for i in range(100)))
    graph = PlanGraph(tmp_path, MANIFEST, HEADER)
    assert graph.catch_up() == 100
    assert os.listdir(tmp_path) == ["tasks.jsonl"]
    graph.write()
    graph.close()
    assert sorted(os.listdir(tmp_path)) == ["plan.json", "tasks.jsonl"]


def open_files_under(folder) -> set[str]:
    """What this process's open descriptors point at under `folder`."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (listdir's own descriptor)
            continue
        if target.startswith(str(folder)):
            found.add(f"{fd} {target}")
    return found


def test_following_opens_the_spool_at_once_not_at_the_first_catch_up(tmp_path):
    (tmp_path / "tasks.jsonl").write_bytes(submitted("a-1"))
    graph = PlanGraph(tmp_path, MANIFEST, HEADER, interval=0.01)
    graph.follow()
    try:
        held = open_files_under(tmp_path)
        assert len(held) == 1  # the spool
        wait_for(lambda: graph.entries == 1)
        assert open_files_under(tmp_path) == held
    finally:
        graph.close()
    assert open_files_under(tmp_path) == set()


def test_a_failed_spool_write_is_read_again_from_the_start_at_the_close(tmp_path, monkeypatch):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(submitted("a-1") + submitted("b-2"))
    graph = PlanGraph(tmp_path, MANIFEST, HEADER)
    graph.catch_up()
    with open(tasks, "ab") as f:
        f.write(submitted("c-3"))
    real = plan_module._entry_bytes
    monkeypatch.setattr(plan_module, "_entry_bytes", lambda entry: 1 / 0)
    try:
        graph.catch_up()
    except ZeroDivisionError:
        pass
    monkeypatch.setattr(plan_module, "_entry_bytes", real)
    graph.write()
    graph.close()
    assert (tmp_path / "plan.json").read_bytes() == expected_bytes(whole_read(tmp_path))


def test_the_session_close_reads_only_what_the_run_wrote_since_the_graph_caught_up(
    project_dir, monkeypatch
):
    from scalable_otel import ScalableSession

    starts = []
    real = plan_module.blocks_holding

    def spy(path, needle, offset=0, final=True, **kwargs):
        starts.append(offset)
        return real(path, needle, offset, final, **kwargs)

    with ScalableSession(target="local", n_workers=1, project="plan") as s:
        s.gather(s.map(workloads.sleep_then, range(20), seconds=0.0))
        graph = s._plan_graph

        def caught_up():
            graph.catch_up()  # as its thread does every few seconds
            return graph.entries == 20

        wait_for(caught_up)
        monkeypatch.setattr(plan_module, "blocks_holding", spy)
    assert starts and min(starts) > 0  # the close did not read tasks.jsonl from its start
    plan = orjson.loads((s.run_dir / "plan.json").read_bytes())
    assert len(plan["graph"]) == 20
    assert {e["task"] for e in plan["graph"]} == {"sleep_then"}


def test_a_full_disk_under_the_spool_fails_the_write_but_never_the_close(tmp_path):
    import errno

    import pytest

    (tmp_path / "tasks.jsonl").write_bytes(submitted("a-1"))
    graph = PlanGraph(tmp_path, MANIFEST, HEADER)
    graph.catch_up()

    class FullDisk:
        def __getattr__(self, name):
            def fail(*args):
                raise OSError(errno.ENOSPC, "No space left on device")

            return fail

    graph._spool = FullDisk()  # a buffered spool whose last flush meets a full disk
    with pytest.raises(OSError):
        graph.write()  # plan.json keeps its first version; the session says so in its log
    graph.close()
    assert not (tmp_path / "plan.json").exists()
