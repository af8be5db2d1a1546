"""Python processes the package starts for itself (the telemetry process, the writer of
a large run's columnar copy)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def child_env() -> dict[str, str]:
    """This process's environment with the directory holding this package first on
    PYTHONPATH: a child imports the same copy of the package as its parent, even when
    the parent found it through its working directory or `sys.path` rather than an
    installation."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
    return env
