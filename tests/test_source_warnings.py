"""The package compiles with warnings as errors, as test suites that run with
`filterwarnings = error` (Dask's own among them) import it."""

import warnings
from pathlib import Path

import pytest

import scalable_otel

PACKAGE = Path(scalable_otel.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_compiles_without_warnings(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile(path.read_text(), str(path), "exec")
