"""The package's layers: `lint-imports` keeps the contracts of [tool.importlinter] in
pyproject.toml (imports point down: CLI, read path, facades, write path, exporters,
vocabulary)."""

import os
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
