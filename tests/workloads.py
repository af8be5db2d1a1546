"""Task functions the tests run on real Dask workers (importable by worker processes)."""

import time

from scalable_otel import cacheable


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def sleep_then(x, seconds=0.3):
    time.sleep(seconds)
    return x


def fail(x):
    raise ValueError(f"bad input {x}")


def burn_cpu(seconds):
    """Busy-loop for `seconds` of wall time (all of it CPU)."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def allocate(megabytes, hold=0.3):
    """Hold `megabytes` of touched memory for `hold` seconds."""
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(hold)
    return len(block)


@cacheable
def simulate(scenario_id, years=10):
    time.sleep(0.05)
    return scenario_id * years


def connect(host, password=None):
    """A task taking a secret argument (its summary must say [redacted])."""
    return f"connected to {host}"


def fail_connecting(url):
    """A task whose error message and traceback hold the URL it was given."""
    raise ConnectionError(f"cannot reach {url}")


def traced_inc(x):
    """`inc`, with a span made inside the task through the plain OpenTelemetry API."""
    from opentelemetry import trace

    with trace.get_tracer("user.code").start_as_current_span("work", attributes={"x": x}):
        return x + 1


def fail_once(marker):
    """Raise on the first call (no `marker` file yet), return on the next; each call makes
    a span saying which it was."""
    from pathlib import Path

    from opentelemetry import trace

    path = Path(marker)
    first = not path.exists()
    path.touch()
    with trace.get_tracer("user.code").start_as_current_span("work", attributes={"first": first}):
        pass
    if first:
        raise RuntimeError("the first attempt fails")
    return "second"
