"""A pytest plugin for `peer_suite.py`: every Dask client the suite makes records a run
into $SCALABLE_PEER_RUNS_DIR, through `DaskInstrumentor`, for the whole test session.

    pytest -p peer_suite_plugin ...   (with benchmarks/ on PYTHONPATH)
"""

from __future__ import annotations

import os

_instrumentor = None


def pytest_configure(config):
    global _instrumentor
    runs_dir = os.environ.get("SCALABLE_PEER_RUNS_DIR")
    if not runs_dir:
        raise RuntimeError("peer_suite_plugin needs $SCALABLE_PEER_RUNS_DIR")
    from scalable_otel.instrumentor import DaskInstrumentor

    _instrumentor = DaskInstrumentor()
    _instrumentor.instrument(runs_dir=runs_dir, project="peer-suite")


def pytest_unconfigure(config):
    if _instrumentor is not None:
        _instrumentor.uninstrument()
