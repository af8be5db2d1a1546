"""Hypothesis strategies for fuzzing what reads run directories and manifests: JSON values of
every type, JSONL lines that are whole, torn, blank or garbage (each labelled), run.json and
plan.json with fields of the wrong type, and whole run directories written by hand."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from scalable_otel import semconv as sc

RUN_NAME = "run-2026010{day}T000000Z-fuzz-0000000{day}"
EVENTS = [
    sc.TASK_SUBMITTED,
    sc.TASK_STARTED,
    sc.TASK_COMPLETED,
    sc.TASK_FAILED,
    sc.TASK_CANCELLED,
    sc.WORKER_ADDED,
    sc.WORKER_REMOVED,
    sc.WORKER_CRASHED,
    sc.RESOURCE_SAMPLE,
    sc.TASK_RESOURCES,
    sc.CACHE_LOOKUP,
]
STAMPS = [
    "2026-01-01T00:00:00.000000Z",
    "2026-01-01T00:00:01.500000Z",
    "2026-01-01T00:00:03.250000Z",
    "2026-01-01T00:01:00.000000Z",
]

# Text a user, a task or a broken disk can put in a file.
ODD_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202eevil\u202c",  # right-to-left override
    "\u200f\u05e9\u05dc\u05d5\u05dd",  # RTL mark, Hebrew
    "🚀💥👩‍🔬",
    "\ufeffbom",
    "line\u2028sep",
    "\ud800",  # lone surrogates: json.dumps writes them as \\ud800 escapes
    "\udfff tail",
    "run-\n",
    "../x",
    "/etc",
    "'; DROP TABLE t; --",
    "{t}",  # the placeholder of columns.query_files
    "?",
    "%s",
    "x" * 300,
]
text = st.one_of(
    st.sampled_from(ODD_TEXT),
    st.text(max_size=12),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=2**63, max_value=2**80),  # beyond int64
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)

NUMBER_FIELDS = [
    "duration",
    "duration_s",
    "queue_wait_s",
    "cpu_percent",
    "memory_bytes",
    "cpu_seconds",
    "cpus_used",
    "peak_memory_bytes",
    "wall_s",
    "lookup_s",
    "saved_s",
    "uptime_s",
    "memory_limit",
]
INT_FIELDS = ["attempt", "nthreads", "schema_version"]
TEXT_FIELDS = [
    "task",
    "key",
    "worker",
    "worker_name",
    "span_id",
    "function",
    "error_type",
    "error_message",
    "traceback",
    "reason",
    "run_id",
]


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for `examples` examples, times $FUZZ_SCALE (FUZZ_SCALE=10 runs a
    longer hunt than the suite's)."""
    return settings(
        max_examples=int(examples * float(os.environ.get("FUZZ_SCALE", "1"))),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _typical(name: str):
    """Values a field of that name has when nothing is wrong."""
    if name == "event":
        return st.sampled_from(EVENTS)
    if name == "timestamp":  # valid, or of the format but no real time
        return st.sampled_from(STAMPS + ["2026-02-30T00:00:00Z", "2026-13-45T25:61:61.5Z"])
    if name == "result":
        return st.sampled_from(["hit", "miss"])
    if name == "cpu_shared":
        return st.booleans()
    if name in NUMBER_FIELDS:  # floats, whole numbers, and integers no double holds exactly
        return st.one_of(
            st.floats(min_value=0, max_value=1e6, allow_nan=False),
            st.integers(0, 100),
            st.integers(2**53 + 1, 2**63 - 1),
        )
    if name in INT_FIELDS:
        return st.integers(min_value=0, max_value=8)
    if name == "worker":
        return st.sampled_from(["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"])
    if name in ("task", "function"):
        return st.sampled_from(["run_simulation", "prepare", "two\nlines"])
    if name in ("key", "span_id"):
        return st.sampled_from(["k-1", "k-2", "k-3"])
    if name == "state":  # runs of the Scalable 2.0 betas
        return st.sampled_from(["submitted", "running", "succeeded", "failed", "cancelled"])
    if name == "hit":
        return st.booleans()
    if name == "args":
        return st.dictionaries(st.sampled_from(["scenario", "years"]), scalars, max_size=2)
    return text


def field_values(name: str):
    """A field's value: mostly the kind it should be, often anything at all."""
    return st.one_of(_typical(name), _typical(name), json_values)


RECORD_FIELDS = ["timestamp", "event", "args", "result", "cpu_shared"]
RECORD_FIELDS += ["state", "task_name", "duration", "hit", "task_id", "event_type"]  # betas
RECORD_FIELDS += NUMBER_FIELDS + INT_FIELDS + TEXT_FIELDS


@st.composite
def records(draw) -> dict:
    """One line's object: a few known fields, each of the right type or of any type."""
    names = draw(st.lists(st.sampled_from(RECORD_FIELDS), max_size=7, unique=True))
    record = {"event": draw(field_values("event"))} if draw(st.booleans()) else {}
    record.update({name: draw(field_values(name)) for name in names})
    return record


def dumps(value) -> bytes:
    """JSON as a writer would put it in a file (lone surrogates as \\ud800 escapes)."""
    return json.dumps(value, ensure_ascii=True).encode()


@dataclass(frozen=True)
class Line:
    """One line of a JSONL file and what a reader must make of it: `ok` (a JSON object,
    `record`), `bad` (skipped and counted) or `blank` (ignored)."""

    raw: bytes
    kind: str
    record: dict | None = None


GARBAGE = [
    b"{not json",
    b"[1, 2]",
    b'"a string"',
    b"42",
    b"null",
    b"true",
    b'{"event": "task_completed"} trailing',
    b'{"event": "task_completed"}{"event": "task_failed"}',
    b'{"event": "task_completed", "task": "\\ud800"}',  # lone surrogate escape
    b'{"event": "task_completed", "task": "\\udc00\\ud800"}',
    b'{"event": "task_completed", "task": "a\x00b"}',  # raw NUL inside a string
    b"\x00\x01\x02garbage",
    b'{"timestamp": "2026-11-28T2',
    b"\xef\xbb\xbf{}",  # a byte-order mark before the object
]
# Not JSON, but DuckDB reads them (NaN, Infinity in any case, numbers beyond a double):
# every reader reads such a line, its non-finite number as null. Each with what it reads as.
NONSTANDARD = [
    (
        b'{"event": "task_completed", "task": "run_simulation", "duration_s": NaN}',
        {"event": "task_completed", "task": "run_simulation", "duration_s": None},
    ),
    (
        b'{"event": "task_completed", "duration_s": -Infinity}',
        {"event": "task_completed", "duration_s": None},
    ),
    (
        b'{"event": "task_completed", "duration_s": 1e999}',
        {"event": "task_completed", "duration_s": None},
    ),
    (
        b'{"event": "task_failed", "duration_s": -nan, "attempt": 1' + b"0" * 400 + b"}",
        {"event": "task_failed", "duration_s": None, "attempt": None},
    ),
    (
        b'{"event": "task_resources", "task": "run_simulation", "cpus_used": NaN, '
        b'"peak_memory_bytes": inf}',
        {"event": "task_resources", "task": "run_simulation", "cpus_used": None}
        | {"peak_memory_bytes": None},
    ),
    (
        b'{"event": "cache_lookup", "result": "hit", "saved_s": NaN}',
        {"event": "cache_lookup", "result": "hit", "saved_s": None},
    ),
]
NON_OBJECTS = json_values.filter(lambda v: not isinstance(v, dict))


def has_surrogate(value) -> bool:
    """Whether a value holds a lone surrogate anywhere: its JSON line is not valid Unicode,
    and readers skip it."""
    if isinstance(value, str):
        try:  # a high and a low surrogate in a row are one character: its JSON is fine
            value.encode("utf-16", "surrogatepass").decode("utf-16")
        except UnicodeDecodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    return False


def _object_line(raw: bytes, record: dict) -> Line:
    return Line(raw, "bad", None) if has_surrogate(record) else Line(raw, "ok", record)


def _truncate(record: dict, data) -> Line:
    raw = dumps(record)
    return Line(raw[: data.draw(st.integers(1, len(raw) - 1))], "bad")


@st.composite
def lines(draw, *, invalid_utf8: bool = True) -> Line:
    """A labelled line (without its newline): `ok`, `bad`, `blank` or `nonstandard` (see
    `NONSTANDARD`: read, with `record` what it reads as)."""
    choice = draw(st.integers(0, 9))
    if choice <= 3:
        record = draw(records())
        return _object_line(dumps(record), record)
    if choice == 4:
        return _truncate(draw(records()), draw(st.data()))
    if choice == 5:
        return Line(dumps(draw(NON_OBJECTS)), "bad")
    if choice == 6:
        return Line(draw(st.sampled_from(GARBAGE)), "bad")
    if choice == 7 and invalid_utf8:
        # invalid UTF-8 (a lone continuation byte or a truncated sequence), in an object
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\x80abc", b"\xed\xa0\x80"]))
        return Line(b'{"event": "task_completed", "task": "' + junk + b'"}', "bad")
    if choice == 8:
        if draw(st.booleans()):
            raw, record = draw(st.sampled_from(NONSTANDARD))
            return Line(raw, "nonstandard", record)
        return Line(draw(st.sampled_from([b"", b" ", b"\t", b"  \t "])), "blank")
    record = draw(records())
    return _object_line(b"  " + dumps(record) + b"\t", record)  # padded


@st.composite
def jsonl_files(draw, *, invalid_utf8: bool = True, max_lines: int = 8) -> tuple[bytes, list]:
    """(file content, its labelled lines): lines joined by newlines, the last one sometimes
    without its newline (a torn write)."""
    items = draw(st.lists(lines(invalid_utf8=invalid_utf8), max_size=max_lines))
    content = b"\n".join(line.raw for line in items)
    if items and draw(st.booleans()):
        content += b"\n"
    return content, items


def bad_count(items: list[Line]) -> int:
    """Lines a reader skips and counts (the SQL readers and the line readers alike)."""
    return sum(line.kind == "bad" for line in items)


def event_less(items: list[Line]) -> int:
    """Lines that are objects without an event: SQL readers count them as unreadable."""
    return sum(line.kind == "ok" and line.record.get("event") is None for line in items)


# --- run.json and plan.json -------------------------------------------------------------

CLOSED_META = {
    "run_id": "run-x",
    "status": "completed",
    "start_time": STAMPS[0],
    "end_time": STAMPS[-1],
    "duration_s": 60.0,
    "target": "local",
    "provider": "local",
}
META_TYPES = {
    "schema_version": st.just(1),
    "run_id": st.just("run-x"),
    "project": st.sampled_from(["demo", "lulcc"]),
    "status": st.sampled_from(["completed", "failed", "running", "interrupted"]),
    "start_time": st.sampled_from(STAMPS[:1]),
    "end_time": st.sampled_from(STAMPS[-1:]),
    "duration_s": st.floats(min_value=0, max_value=1e5),
    "target": st.sampled_from(["local", "hpc", "tcp://h:8786"]),
    "provider": st.sampled_from(["local", "slurm", "aws", "nonsense"]),
    "host": st.sampled_from(["elsewhere", "localhost"]),
    "pid": st.integers(1, 2**22),
    "process_start_time": st.floats(min_value=0, max_value=2e9),
    "tasks_submitted": st.integers(0, 10),
    "tasks_completed": st.integers(0, 10),
    "tasks_failed": st.integers(0, 10),
    "tasks_cancelled": st.integers(0, 10),
    "cache_hits": st.integers(0, 10),
    "cache_misses": st.integers(0, 10),
    "telemetry_lines_dropped": st.integers(0, 10),
    "telemetry_lost": st.booleans(),
    "settings": st.just({"n_workers": 2}),
}


@st.composite
def metas(draw) -> dict:
    """A run.json object: known fields, each of its type or of any type (None: left out)."""
    meta = {}
    for name, good in META_TYPES.items():
        value = draw(st.one_of(good, good, json_values, st.just(...)))
        if value is not ...:
            meta[name] = value
    return meta


BETA_TYPES = {
    "run_id": st.just("run-x"),
    "started_at": st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00"]),
    "finished_at": st.sampled_from(["2026-01-01T00:00:50Z"]),
    "status": st.sampled_from(["succeeded", "failed", "running"]),
    "target_name": st.sampled_from(["hpc", "local"]),
    "provider_name": st.sampled_from(["slurm", "local"]),
    "project_name": st.just("lulcc"),
    "duration_s": st.floats(0, 100),
}


@st.composite
def beta_metas(draw) -> dict:
    """A run.json of the Scalable tool's 2.0 betas (`started_at`, no `start_time`)."""
    meta = {"started_at": draw(st.one_of(BETA_TYPES["started_at"], json_values))}
    for name, good in BETA_TYPES.items():
        value = draw(st.one_of(good, json_values, st.just(...)))
        if value is not ...:
            meta[name] = value
    return meta


@st.composite
def run_json_files(draw) -> bytes | None:
    """run.json's content: an object with fuzzed fields (ours or a beta's), or not an
    object, or corrupt, or missing (None)."""
    choice = draw(st.integers(0, 6))
    if choice <= 1:
        return dumps(draw(metas()))
    if choice == 2:
        return dumps(draw(beta_metas()))
    if choice == 3:
        return dumps(draw(NON_OBJECTS))
    if choice == 4:
        return draw(st.sampled_from(GARBAGE + [b"", b"\xff\xfe"]))
    if choice == 5:
        return dumps(CLOSED_META)
    return None


@st.composite
def plan_json_files(draw) -> bytes | None:
    task = st.fixed_dictionaries(
        {}, optional={"cpus": st.floats(0.1, 64) | json_values, "memory": json_values}
    )
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return None
    if choice == 1:
        return draw(st.sampled_from(GARBAGE))
    if choice == 2:
        return dumps(draw(json_values))
    tasks = draw(st.one_of(st.dictionaries(st.sampled_from(["run_simulation", "prepare"]), task)))
    return dumps({"schema_version": 1, "tasks": tasks})


summaries = st.fixed_dictionaries(
    {},
    optional={
        name: st.one_of(st.integers(0, 10), json_values)
        for name in ("total_tasks", "succeeded", "completed", "failed", "status")
    },
)

MANIFEST_YAML = [
    None,
    b"",
    b"tasks: [a, b]\ncomponents: 3\ntargets: [x]\n",
    b"tasks: 7\n",
    b"tasks: {run_simulation: {component: sim}}\ncomponents: {sim: {cpus: 4, memory: 16G}}\n",
    b"tasks: {run_simulation: {component: sim}}\n"
    b"components: {sim: {cpus: '1e999', memory: '" + b"9" * 400 + b"G'}}\n",
    b"targets: {local: {cost: {cpu_hour: -1}}}\n",
    b"targets: {local: {cost: [1]}, hpc: 3}\n",
    b"targets: {local: {cost: {cpu_hour: 1e999, memory_gb_hour: .nan}}}\n",
    b"- just\n- a list\n",
    b"key: [unclosed\n",
    b"\xff\xfe not utf-8",
    b"targets: {local: {cost: {cpu_hour: " + b"9" * 400 + b"}}}\n",
    b"targets: {local: {cost: {cpu_hour: " + b"9" * 5000 + b"}}}\n",
    b"targets: {local: {cost: {" + b"9" * 5000 + b": 1}}}\n",
    b"tasks: {run_simulation: {component: sim}}\n"
    b"components: {sim: {cpus: " + b"9" * 400 + b", memory: " + b"9" * 400 + b"}}\n",
    b"a: &a [x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\n",
]


@dataclass
class RunFiles:
    """The files of one run directory to write (None: the file is missing)."""

    run_json: bytes | None
    jsonl: dict[str, tuple[bytes, list]] = field(default_factory=dict)
    plan_json: bytes | None = None
    manifest_yaml: bytes | None = None
    summary_json: bytes | None = None  # a beta run's totals

    def write(self, path: Path) -> Path:
        path.mkdir(parents=True)
        if self.run_json is not None:
            (path / "run.json").write_bytes(self.run_json)
        if self.plan_json is not None:
            (path / "plan.json").write_bytes(self.plan_json)
        if self.manifest_yaml is not None:
            (path / "manifest.yaml").write_bytes(self.manifest_yaml)
        if self.summary_json is not None:
            (path / "summary.json").write_bytes(self.summary_json)
        for name, (content, _) in self.jsonl.items():
            (path / name).write_bytes(content)
        return path


JSONL_NAMES = ["tasks.jsonl", "resources.jsonl", "workers.jsonl", "cache.jsonl", "failures.jsonl"]


@st.composite
def run_dirs(draw, *, invalid_utf8: bool = True) -> RunFiles:
    """A run directory's files, each of them fuzzed (or missing)."""
    jsonl = {}
    for name in JSONL_NAMES:
        if draw(st.integers(0, 5)):  # mostly present
            jsonl[name] = draw(jsonl_files(invalid_utf8=invalid_utf8))
    return RunFiles(
        run_json=draw(run_json_files()),
        jsonl=jsonl,
        plan_json=draw(plan_json_files()),
        manifest_yaml=draw(st.sampled_from(MANIFEST_YAML)),
        summary_json=draw(st.one_of(st.none(), summaries.map(dumps), json_values.map(dumps))),
    )


def write_runs(root: Path, runs: list[RunFiles]) -> list[Path]:
    """Write the runs under `root` with run names a day apart; their directories."""
    return [run.write(root / RUN_NAME.format(day=i + 1)) for i, run in enumerate(runs)]
