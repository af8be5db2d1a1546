"""Task functions the tests run on real Dask workers (importable by worker processes)."""

import os
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


def fail_with_token():
    """A task whose error message holds a token from the worker's environment."""
    raise ValueError(f"token={os.environ['APP_API_TOKEN']}")


def traced_login(host):
    """A task making spans of its own with the OpenTelemetry API, each carrying a password
    from the worker's environment in an exception or a status (and a patient's record
    number, a secret by the user's rules only): one records a caught error, one lets the
    error out of the task."""
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    tracer = trace.get_tracer("tests.workloads")
    password, patient = os.environ["APP_DB_PASSWORD"], os.environ["APP_PATIENT"]
    with tracer.start_as_current_span("retry") as span:
        try:
            raise ConnectionError(f"{host} refused password={password} for {patient}")
        except ConnectionError as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"refused: password={password}"))
    with tracer.start_as_current_span("login"):
        raise PermissionError(f"login to https://ann:{password}@{host} failed for {patient}")


def hold_until(path, x, timeout=200.0):
    """Keep the worker busy until the file `path` exists (a test's release, so that the
    worker is surely running this task when it is killed), then return `x`."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        time.sleep(0.05)
    return x


def hold_until_then_sleep(path, x, seconds=0.3):
    """`hold_until`, then sleep `seconds`: ends surely later than the task that made
    `path`, whatever the clocks' small disagreements."""
    hold_until(path, x)
    time.sleep(seconds)
    return x


def make_spans(n):
    """A task making `n` spans of its own with the OpenTelemetry API."""
    from opentelemetry import trace

    tracer = trace.get_tracer("tests.workloads")
    for i in range(n):
        with tracer.start_as_current_span(f"step-{i}"):
            pass
    return n


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


def touch(path, x):
    """Create the file `path` (the release `hold_until` waits for), then return `x`."""
    with open(path, "a"):
        pass
    return x


def add_energy(counter, microjoules, max_range):
    """Advance a powercap-style `energy_uj` file by `microjoules`, wrapping at `max_range`
    as the kernel's counter does. Workers of one host share the file: a lock orders the
    writers, and a rename lets a reader see the old value or the new, never an empty file
    (as a read of the kernel's counter never is)."""
    import fcntl
    import os

    with open(f"{counter}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(counter) as f:
            value = (int(f.read().strip()) + microjoules) % max_range
        with open(f"{counter}.new", "w") as f:
            f.write(f"{value}\n")
        os.replace(f"{counter}.new", counter)
    return value
