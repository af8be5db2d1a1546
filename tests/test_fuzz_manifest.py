"""Fuzzing the manifest: YAML text of every shape, data structures of every shape, YAML
bombs, deep nesting, huge numbers. Every failure is a `ManifestError` whose one-line message
names the file (and the key path where there is one); nothing hangs, nothing else is raised,
and a manifest that loads has a hash, a project and its task requests."""

from __future__ import annotations

import time
import warnings

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from scalable_otel.manifest import (
    SECTIONS,
    Manifest,
    ManifestError,
    choose_target,
    size_bytes,
    validate,
)
from tests.fuzz_strategies import fuzz_settings

FUZZ = fuzz_settings(100)
SOURCE = "fuzz.yaml"

# --- strategies ---------------------------------------------------------------------------

KNOWN_KEYS = [
    *SECTIONS,
    "name",
    "local",
    "hpc",
    "slurm",
    "provider",
    "max_workers",
    "threads_per_worker",
    "memory",
    "queue",
    "account",
    "walltime",
    "cores",
    "processes",
    "job_extra",
    "address",
    "cpus",
    "gpus",
    "component",
    "sim",
    "cost",
]
ODD = ["", " ", "a\nb", "\u202eevil", "🚀", "\x00", "\ud800", "x" * 100, "a.b", '"q"']
text = st.one_of(st.sampled_from(ODD), st.text(max_size=8))
keys = st.one_of(
    st.sampled_from(KNOWN_KEYS),
    text,
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
)
SETTINGS = [
    "16G",
    "512Mi",
    "16GB",
    "-1G",
    "0",
    "auto",
    "16 gigs",
    "9" * 400 + "G",
    "1e3",
    "01:00:00",
    "1-23:59:59",
    "2-24:00:00",
    "tcp://h:8786",
    "local",
    "slurm",
    "Slurm ",
    "sim",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([-1, 0, 1, 2**64, 10**400]),
    st.floats(),  # with NaN and infinities, as YAML's .nan and .inf
    text,
    st.sampled_from(SETTINGS),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=10,
)


def section(names, fields):
    """A mapping of names to settings whose keys are mostly the ones the checks read."""
    entry = st.one_of(st.dictionaries(st.sampled_from(fields) | keys, values, max_size=5), values)
    return st.one_of(st.dictionaries(st.sampled_from(names) | keys, entry, max_size=3), values)


manifests = st.one_of(
    values,
    st.fixed_dictionaries(
        {},
        optional={
            "version": st.one_of(st.just(1), values),
            "project": st.one_of(st.fixed_dictionaries({"name": values}), values),
            "targets": section(
                ["local", "hpc", "slurm", "tcp://h:1", "aws"],
                ["provider", "max_workers", "threads_per_worker", "memory", "queue"]
                + ["account", "walltime", "cores", "processes", "job_extra", "address", "cost"],
            ),
            "components": section(["sim", "prep"], ["cpus", "memory", "gpus"]),
            "tasks": section(["run_simulation", "prepare"], ["component"]),
            "extra": values,
        },
    ),
)

TOKENS = [
    "version: 1\n",
    "project: {name: p}\n",
    "targets:\n",
    "  local:\n",
    "  hpc: {provider: slurm, walltime: 12:00:00}\n",
    "    provider: ",
    "    memory: ",
    "components:\n",
    "  sim: {cpus: 4, memory: 16G}\n",
    "tasks:\n",
    "  run: {component: sim}\n",
    "\n",
    "  ",
    "\t",
    "- ",
    "&a ",
    "*a",
    "<<: *a\n",
    "{",
    "}",
    "[",
    "]",
    ", ",
    ": ",
    "'",
    '"',
    '"\\ud800"',
    '"\\x00"',
    "!!binary aGk=",
    "!!set {a, b}",
    "!!python/object/apply:os.system [true]",
    "? ",
    "~",
    ".inf",
    ".nan",
    "0x1F",
    "1e999",
    "9" * 5000,
    "2020-01-01",
    "#",
    "\u202e",
    "🚀",
    "\x00",
    "\ufeff",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
]
yaml_texts = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)), max_size=25).map(
    "".join
)


# --- checks -------------------------------------------------------------------------------


def one_line(exc: ManifestError, source: str = SOURCE) -> str:
    """The message's part after the file name; fails unless it is one line naming the file."""
    message = str(exc)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{source}: "), message
    return message[len(source) + 2 :]


def usable(manifest: Manifest) -> None:
    """What a session asks of a manifest that loaded."""
    assert manifest.hash.startswith("sha256:") and len(manifest.hash) == 71
    assert isinstance(manifest.project, str)
    assert isinstance(manifest.task_requests(), dict)
    assert isinstance(manifest.to_yaml(), str)
    for name in list(manifest.targets) + ["nowhere"]:
        try:
            manifest.target(name)
        except ManifestError as exc:
            assert len(str(exc).splitlines()) == 1
    for explicit in (None, "local", "hpc", "nowhere\nelse"):
        try:
            choose_target(manifest, explicit, {"SLURM_JOB_ID": "1"})
        except ManifestError as exc:
            assert len(str(exc).splitlines()) == 1


def check_data(data) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            validate(data, SOURCE)
        except ManifestError as exc:
            rest = one_line(exc)
            if not rest.startswith("expected a mapping at the top level"):
                section_name = rest.split(": ", 1)[0].split(".", 1)[0].split("[", 1)[0]
                assert section_name in SECTIONS and section_name in data, rest
            return
        usable(Manifest.from_dict(data))


# --- structures ------------------------------------------------------------------------------


@FUZZ
@given(manifests)
@example({"components": {"sim": {"cpus": 1, "memory": "9" * 400 + "G"}}})
@example({"components": {"sim": {"cpus": float("inf"), "memory": "1G"}}})
@example({"version": 10**5000})
@example({"project": "\ud800"})
@example({"components": {"sim": {"cpus": 1, "memory": "1G", 1: "a", "b": 2**70}}})
@example({"components": {"a\nb": {"cpus": 1, "memory": "1G"}}, "tasks": {"t": {"component": 1}}})
def test_validate_fails_only_with_a_one_line_error_naming_the_key(data):
    check_data(data)


@FUZZ
@given(manifests)
def test_the_same_data_as_yaml_loads_the_same_way(tmp_path_factory, data):
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return  # no YAML form (a lone surrogate, an integer too long to write)
    path = tmp_path_factory.mktemp("yaml") / "scalable.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    loads_or_fails_on_one_line(path)


def loads_or_fails_on_one_line(path) -> None:
    """`Manifest.load(path)` gives a usable manifest, or a one-line ManifestError naming
    the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            manifest = Manifest.load(path)
        except ManifestError as exc:
            one_line(exc, str(path))
            return
    usable(manifest)


# --- text --------------------------------------------------------------------------------------


@FUZZ
@given(yaml_texts)
@example('project: "\\ud800"\n')
@example("version: " + "9" * 5000 + "\n")
@example("components: {sim: {cpus: 1, memory: 1G, 1: a, b: 99999999999999999999999}}\n")
def test_any_text_loads_or_is_a_one_line_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("text") / "scalable.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    loads_or_fails_on_one_line(path)


def _bomb(levels: int, width: int = 9, where: str = "") -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return where + "\n".join("  " * bool(where) + line for line in lines) + "\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_bomb(9), id="top-level"),
        pytest.param(
            _bomb(25, 2, "components:\n  sim: {cpus: 1, memory: 1G}\nextra:\n"), id="deep"
        ),
        pytest.param(
            "components:\n  sim:\n    cpus: 1\n    memory: 1G\n    notes: &x ["
            + ", ".join(["lol"] * 10)
            + "]\n"
            + "".join(
                f"    n{i}: &x{i} [{', '.join([f'*x{i - 1}' if i > 1 else '*x'] * 10)}]\n"
                for i in range(1, 9)
            ),
            id="in-a-component",
        ),
    ],
)
def test_a_yaml_bomb_is_refused_quickly(tmp_path, text):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ManifestError) as caught:
            assert Manifest.load(path).hash
    assert time.monotonic() - started < 10
    assert "aliases that expand to" in one_line(caught.value, str(path))


def test_aliases_that_expand_to_a_little_are_fine(tmp_path):
    path = tmp_path / "scalable.yaml"
    path.write_text(
        "targets:\n  base: &base {provider: slurm, queue: short}\n"
        "  hpc: {<<: *base, account: a}\n" + _bomb(4, 5, "x:\n")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        usable(Manifest.load(path))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[" * 2000, id="flow"),
        pytest.param("- " * 2000 + "x\n", id="block-sequence"),
        pytest.param("".join("  " * i + f"k{i}:\n" for i in range(1500)), id="block-mapping"),
    ],
)
def test_deep_nesting_is_a_one_line_error(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as caught:
        Manifest.load(path)
    assert "nested too deeply" in one_line(caught.value, str(path))


@pytest.mark.parametrize(
    "text, message",
    [
        ("version: " + "9" * 5000 + "\n", "version: expected a number of at most 4300 digits"),
        (
            "components: {sim: {cpus: 2, memory: " + "9" * 400 + "G}}\n",
            "components.sim.memory: expected a size such as 16G",
        ),
        ("components: {sim: {cpus: .inf, memory: 1G}}\n", "components.sim.cpus: expected a number"),
        (
            "components: {sim: {cpus: 1e999, memory: 1G}}\n",
            "components.sim.cpus: expected a number",
        ),
        ("components: {sim: {cpus: 2, memory: -1}}\n", "components.sim.memory: expected a size"),
        ("components: {sim: {cpus: -2, memory: 1G}}\n", "components.sim.cpus: expected a number"),
        ("targets: {local: {max_workers: -1}}\n", "targets.local.max_workers: expected an int"),
        ("targets: {1: {provider: local}}\n", "targets: expected target names that are"),
        ("components: {[a]: {cpus: 1}}\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping at the top level, found a list"),
        ("just text\n", "expected a mapping at the top level, found 'just text'"),
        (b"\xff\xfe", "expected UTF-8 text"),
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else "bytes",
)
def test_odd_values_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "odd.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ManifestError) as caught:
        Manifest.load(path)
    assert one_line(caught.value, str(path)).startswith(message)


def test_names_with_newlines_stay_on_one_line():
    data = {
        "components": {"a\nb": {"cpus": 1, "memory": "1G"}},
        "targets": {"x\ny": {"provider": "local"}},
    }
    with pytest.raises(ManifestError) as caught:
        validate(data | {"tasks": {"t": {"component": "c"}}}, SOURCE)
    assert "'a\\nb'" in one_line(caught.value)
    manifest = Manifest.from_dict(data)
    for call in (lambda: manifest.target("z"), lambda: choose_target(manifest, "z", {})):
        with pytest.raises(ManifestError) as caught:
            call()
        assert len(str(caught.value).splitlines()) == 1


def test_a_manifest_path_no_file_can_have_is_a_one_line_error(tmp_path):
    for path in ("a\x00b.yaml", str(tmp_path / ("x" * 5000)), str(tmp_path)):
        with pytest.raises(ManifestError) as caught:
            Manifest.load(path)
        assert len(str(caught.value).splitlines()) == 1


@FUZZ
@given(st.one_of(values, st.sampled_from(SETTINGS)))
def test_size_bytes_is_bytes_or_none(value):
    nbytes = size_bytes(value)
    assert nbytes is None or isinstance(nbytes, int)


def test_hash_of_data_orjson_cannot_write():
    odd = {"project": "\ud800", "components": {"s": {1: "a", "b": 2**70}}}
    assert Manifest(data=odd).hash == Manifest(data={**odd}).hash
    assert Manifest(data=odd).hash != Manifest(data={**odd, "project": "\ud801"}).hash
