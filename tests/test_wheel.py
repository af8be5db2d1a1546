"""The package as a user gets it: `python -m build` makes the sdist and, from it, the wheel;
the wheel is installed in a fresh virtual environment outside the checkout, and
`scalable demo` then `scalable report --last` run there, in a folder of their own.

Slow, for the install, and needs the package registry (or pip's cache): about 20 s in all
on a 2-core machine, of which the build takes 4 s, the install into the new environment
7 s (pip of the test environment installs there, with no byte-compiling) and the demo
with its reports 6 s.

Nothing here may see the checkout's package: the build works on a copy of the checkout,
and every command of the installed package runs from a temporary folder with no
PYTHONPATH and no user site-packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import orjson
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: build brings tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "scalable_otel"
# what a checkout holds that is not the project's source
NOT_SOURCE = (".git", ".venv", ".ci-venvs", ".scalable", "__pycache__", "*.pyc", "*.egg-info")
NOT_SOURCE += ("build", "dist", ".pytest_cache", ".hypothesis", ".ruff_cache", "dask-scratch-space")

pytestmark = pytest.mark.timeout(1200)


def clean_env() -> dict[str, str]:
    """The environment without anything that points Python at the checkout or changes
    where a run is written."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "SCALABLE_", "OTEL_"))
    }
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run(args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def succeeded(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, (done.args, done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel, the wheel built from the sdist (`python -m build`'s way)."""
    base = tmp_path_factory.mktemp("dists")
    source = base / "source"  # the build writes its egg-info beside the sources
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    succeeded(run([sys.executable, "-m", "build", "--outdir", base / "dist", source], cwd=base))
    (wheel,) = (base / "dist").glob("*.whl")
    (sdist,) = (base / "dist").glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed, its bin/ folder."""
    where = tmp_path_factory.mktemp("venv")
    # pip of the test environment installs into it: no pip of its own to set up first
    succeeded(run([sys.executable, "-m", "venv", "--without-pip", where / "env"], cwd=where))
    python = where / "env" / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet"]
    succeeded(run([*pip, "--no-compile", dists["wheel"]], cwd=where))
    return where / "env" / "bin"


def package_files() -> set[str]:
    """Every file of the checkout's package, as a path inside the wheel."""
    root = REPO / PACKAGE
    return {
        f"{PACKAGE}/{path.relative_to(root).as_posix()}"
        for path in root.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix != ".pyc"
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    }


def declared_package_data() -> dict[str, list[str]]:
    """`[tool.setuptools.package-data]`: each non-Python pattern, with the checkout's files
    it matches (as paths inside the wheel)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = config["tool"]["setuptools"].get("package-data", {})
    packages = sorted(p.parent for p in (REPO / PACKAGE).rglob("__init__.py"))
    matches: dict[str, list[str]] = {}
    for package, patterns in declared.items():
        roots = packages if package == "*" else [REPO / package.replace(".", "/")]
        for pattern in patterns:
            found = matches.setdefault(f"{package}: {pattern}", [])
            for root in roots:
                found += [
                    path.relative_to(REPO).as_posix()
                    for path in root.glob(pattern)
                    if path.is_file() and path.suffix != ".py"
                ]
    return matches


def test_the_wheel_holds_every_file_of_the_package_and_its_declared_data(dists):
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
    in_wheel = {name for name in names if name.startswith(f"{PACKAGE}/")}
    # a data file left out of package-data is missing here
    assert in_wheel == package_files()
    data = declared_package_data()
    assert data, "pyproject.toml declares no package data"
    for pattern, files in data.items():
        assert files, f"package-data {pattern} matches no file of the checkout"
        assert set(files) <= names, (pattern, set(files) - names)
    (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        text = wheel.read(entry_points).decode()
    assert re.search(r"^scalable = scalable_otel\.cli:main$", text, re.M)


def test_the_sdist_holds_the_package_the_wheel_was_built_from(dists):
    with tarfile.open(dists["sdist"]) as sdist:
        names = [member.name for member in sdist.getmembers() if member.isfile()]
    top = dists["sdist"].name.removesuffix(".tar.gz")
    inside = {name.removeprefix(f"{top}/") for name in names}
    assert {"pyproject.toml", "README.md", "PKG-INFO"} <= inside
    # the wheel was built from this sdist, and holds every file of the checkout's package
    assert {name for name in inside if name.startswith(f"{PACKAGE}/")} == package_files()


def test_the_version_is_written_once(dists, venv, tmp_path):
    """scalable_otel/version.py holds the version; the build, the installed metadata and the
    package's `__version__` all read it from there."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in config["project"] and "version" in config["project"]["dynamic"]
    source = (REPO / PACKAGE / "version.py").read_text()
    (version,) = re.findall(r'^__version__ = "([^"]+)"$', source, re.M)
    assert dists["wheel"].name.startswith(f"{PACKAGE}-{version}-")
    code = (
        f"import importlib.metadata, {PACKAGE}; "
        f"print({PACKAGE}.__version__, importlib.metadata.version('scalable-otel'))"
    )
    shown = succeeded(run([venv / "python", "-c", code], tmp_path)).split()
    assert shown == [version, version]


def test_demo_and_report_from_the_installed_wheel(venv, tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    where = succeeded(
        run([venv / "python", "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"], work)
    )
    assert Path(where.strip()).is_relative_to(venv.parent), where

    demo = succeeded(run([venv / "scalable", "demo", "--scenarios", "8"], work, timeout=300))
    assert "7 of 8 scenarios ran" in demo  # scenario 7 fails on purpose
    (run_dir,) = (work / ".scalable" / "runs").iterdir()
    assert f"Run directory: {run_dir}" in demo

    last = succeeded(run([venv / "scalable", "report", "--last"], work))
    assert last.strip() in demo  # the demo ends with the same report
    assert re.search(rf"^Run Report: {run_dir.name}$", last, re.M)
    lines = [orjson.loads(line) for line in (run_dir / "tasks.jsonl").read_bytes().splitlines()]
    counts = {
        event: sum(e["event"] == event for e in lines)
        for event in ("task_submitted", "task_completed", "task_failed")
    }
    assert counts["task_completed"] > 8  # the simulations, the summary and the array's tasks
    assert re.search(rf"^  Submitted:\s+{counts['task_submitted']}$", last, re.M), last
    assert re.search(rf"^  Completed:\s+{counts['task_completed']}$", last, re.M), last
    assert re.search(r"^  Failed:\s+1$", last, re.M) and counts["task_failed"] == 1, last
    assert re.search(r"^  Lookups:\s+8$", last, re.M), last

    # the HTML report reads its package data from the installed package
    page = work / "report.html"
    succeeded(run([venv / "scalable", "report", "--last", "--html", page], work))
    assert run_dir.name in page.read_text()
