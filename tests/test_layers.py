"""The package's layers: `lint-imports` keeps the contracts of [tool.importlinter] in
pyproject.toml (imports point down: CLI, read path, facades, write path, exporters,
vocabulary; within the read path: the answers, report, cost, Run, columns, beta, facts),
and an ast check keeps `Run` the only reader of a run directory."""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _lint_imports() -> list[str]:
    # the script installed beside this Python (a virtual environment's bin/)
    script = Path(sys.executable).with_name("lint-imports")
    if script.is_file():
        return [str(script)]
    found = shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports not found: pip install -e '.[test]' installs import-linter")
    return [found]


def test_imports_follow_the_layers():
    env = dict(os.environ)
    # this checkout's package, whatever is installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [*_lint_imports(), "--no-cache"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# --- Run, the only reader of a run directory ------------------------------------------------

ANALYSIS = REPO / "scalable_otel" / "analysis"
# The modules that open a run's files: `Run` (load.py), the SQL relations it hands out
# (columns.py: the JSONL scan, the columnar copy), and the Scalable 2.0 beta's files read
# under our names (beta.py).
READERS = {"load.py", "columns.py", "beta.py"}
# Modules that read files of their own by design (their module docstrings say why).
EXCEPTIONS = {
    # a raw typed copy of each file, in batches up to the size it had when the export
    # began: not the answers' reading (no counts rule, no beta names, no columnar copy)
    "export.py": "a raw typed copy of the files, by design not read as the answers read them",
    # traces.otlp.jsonl is the OTLP exporter's file, sent line by line as recorded
    "replay.py": "sends traces.otlp.jsonl as it was recorded",
}
# Calls that read a file (a bare name, or an attribute on anything)...
READING_NAMES = {"RunFile", "read_lines", "iter_lines", "open"}
READING_METHODS = {"RunFile", "read_lines", "open", "read_bytes", "read_text"}
# ...SQL or Python that scans a file by its path.
FILE_SCAN = re.compile(r"\bread_(json|ndjson|parquet|csv)\w*\s*\(", re.IGNORECASE)
FILE_SCAN_METHODS = re.compile(r"^read_(json|ndjson|parquet|csv|table)")


def _root(node: ast.AST) -> ast.AST:
    """The name a chain of attributes and calls starts from (`a` of `a.b(c).d`)."""
    while isinstance(node, (ast.Attribute, ast.Call)):
        node = node.value if isinstance(node, ast.Attribute) else node.func
    return node


def file_reads(source: str) -> list[str]:
    """Where a module's source reads a file itself, as `line: what` strings."""
    tree = ast.parse(source)
    imported: set[str] = set()  # names bound by imports: modules or their functions
    assets: set[str] = set()  # names of importlib.resources: package data, not run files
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                imported.add(name)
                full = f"{module}.{alias.name}" if module else alias.name
                if full.startswith("importlib.resources") or full == "importlib":
                    assets.add(name)
                # the line readers themselves, or a reader under another name (RunFile
                # may be imported as a type)
                if alias.name in {"read_lines", "iter_lines"} or (
                    alias.name in READING_NAMES and alias.asname
                ):
                    found.append(f"{node.lineno}: imports {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in READING_NAMES:
                found.append(f"{node.lineno}: {func.id}(")
            elif isinstance(func, ast.Attribute):
                root = _root(func.value)
                from_assets = isinstance(root, ast.Name) and root.id in assets
                if from_assets:
                    continue
                # `run.iter_lines(...)` is Run's; `rundir.iter_lines(...)` is not
                on_module = isinstance(root, ast.Name) and root.id in imported
                if (
                    func.attr in READING_METHODS
                    or FILE_SCAN_METHODS.match(func.attr)
                    or (func.attr == "iter_lines" and on_module)
                ):
                    found.append(f"{node.lineno}: .{func.attr}(")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if FILE_SCAN.search(node.value):
                found.append(f"{node.lineno}: SQL {FILE_SCAN.search(node.value).group(0)}")
    return found


def test_run_is_the_only_reader_of_a_run_directory():
    """Every module of the read path reads a run's files through `load.Run` (run.file,
    run.lines, run.iter_lines, run.plan, run.manifest): none opens one itself."""
    offenders, exceptions_reading = {}, set()
    for path in sorted(ANALYSIS.rglob("*.py")):
        name = str(path.relative_to(ANALYSIS))
        if name in READERS:
            continue
        reads = file_reads(path.read_text(encoding="utf-8"))
        if name in EXCEPTIONS:
            if reads:
                exceptions_reading.add(name)
        elif reads:
            offenders[name] = reads
    assert not offenders, f"read a run's files through load.Run, not directly: {offenders}"
    # an exception that no longer reads files itself is no longer one
    assert exceptions_reading == set(EXCEPTIONS)


@pytest.mark.parametrize(
    "source",
    [
        "from ..rundir import iter_lines\n",
        "from ..columns import RunFile as Scan\n",
        "x = RunFile(path, 'tasks.jsonl')\n",
        "from .. import rundir\nrows = rundir.read_lines(path)\n",
        "from .. import rundir\nrows = list(rundir.iter_lines(path))\n",
        "data = (path / 'run.json').read_bytes()\n",
        "with open(path) as f:\n    pass\n",
        "with path.open() as f:\n    pass\n",
        "import pandas as pd\nframe = pd.read_json(path, lines=True)\n",
        "SQL = \"SELECT * FROM read_json($1, format='newline_delimited')\"\n",
        'SQL = f"SELECT * FROM read_parquet({path!r})"\n',
    ],
)
def test_the_reader_check_sees_a_module_reading_files(source):
    assert file_reads(source)


@pytest.mark.parametrize(
    "source",
    [
        "lines = list(run.iter_lines('tasks.jsonl', containing=b'task_failed'))\n",
        "rows = run.file('tasks.jsonl', ['event']).query('SELECT count(*) FROM {t}')\n",
        "from importlib import resources\n"
        "css = resources.files(__package__).joinpath('report.css').read_text()\n",
        '"""Reads tasks.jsonl with DuckDB\'s JSON reader, via Run."""\n',
    ],
)
def test_the_reader_check_lets_run_and_package_data_be(source):
    assert file_reads(source) == []


def test_no_module_imports_from_the_packages_init():
    """`from .. import __version__` imports the package's __init__, which no contract sees:
    inside the package, names come from the module that defines them (the version from
    scalable_otel.version)."""
    root = REPO / "scalable_otel"
    found = []
    for path in sorted(root.rglob("*.py")):
        package = path.parent.relative_to(root.parent).parts
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                target = package[: len(package) - node.level + 1]
                target += tuple(node.module.split(".")) if node.module else ()
            else:
                target = tuple((node.module or "").split("."))
            if target != ("scalable_otel",):
                continue
            for alias in node.names:  # a submodule is fine: `from .. import semconv`
                if not ((root / f"{alias.name}.py").is_file() or (root / alias.name).is_dir()):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {alias.name}")
    assert not found
