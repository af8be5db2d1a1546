"""A driver process under test: started, watched line by line, signalled, cleaned up."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import psutil

from tests.conftest import REPO

SCALABLE = Path(sys.executable).parent / "scalable"


def clean_env(**extra) -> dict:
    """This environment without telemetry settings, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALABLE_", "OTEL_"))}
    env.pop("SLURM_JOB_ID", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class Driver:
    """`python -m tests.faults.driver ARGS` in `cwd`; its stdout lines (JSON) are kept
    with the monotonic time each arrived, and its stderr (a pipe, which no file size limit
    or full disk stops) as it comes."""

    def __init__(self, cwd: Path, *args: str, stdin: bool = False, group: bool = False, env=None):
        self.cwd = Path(cwd)
        self._stderr = bytearray()
        self.lines: list[tuple[float, dict]] = []
        self._eof = False
        self._cond = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.driver", *args],
            cwd=self.cwd,
            env=env or clean_env(),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=group,  # its own process group, to signal all of it at once
        )
        self.pid = self.process.pid
        self._family: dict[int, psutil.Process] = {}
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stderr(self) -> None:
        for chunk in iter(lambda: self.process.stderr.read1(65536), b""):
            self._stderr += chunk

    def _read(self) -> None:
        for raw in self.process.stdout:
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            with self._cond:
                self.lines.append((time.monotonic(), line))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 60.0) -> dict:
        """The first line `predicate` accepts, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _, line in self.lines:
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(f"driver never said so; stderr:\n{self.stderr()[-3000:]}")
                self._cond.wait(remaining)

    def wait_done(self, count: int, timeout: float = 90.0) -> None:
        """Wait until the driver has said `count` tasks done."""
        self.wait_for(lambda _: len(self.done()) >= count, timeout)

    def done(self) -> list[tuple[float, str]]:
        """(arrival time, key) of every task the driver said it finished."""
        with self._cond:
            return [(t, line["done"]) for t, line in self.lines if "done" in line]

    def send(self, text: str) -> None:
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def remember_family(self) -> list[psutil.Process]:
        """The driver's child processes now (workers, the telemetry process, ...)."""
        try:
            for child in psutil.Process(self.pid).children(recursive=True):
                self._family[child.pid] = child
        except psutil.NoSuchProcess:
            pass
        return list(self._family.values())

    def recorder(self) -> psutil.Process:
        """The session's telemetry process."""
        for child in self.remember_family():
            try:
                if "scalable_otel._recorder_main" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        raise AssertionError("no telemetry process")

    def signal(self, signum: int, group: bool = False) -> float:
        """Send `signum` to the driver (or its whole process group); the monotonic time."""
        self.remember_family()
        sent = time.monotonic()
        if group:
            os.killpg(self.pid, signum)
        else:
            os.kill(self.pid, signum)
        return sent

    def finish(self, timeout: float = 90.0) -> int:
        """The driver's exit code, once it has ended."""
        return self.process.wait(timeout)

    def stderr(self) -> str:
        """What the driver (and the processes it started) wrote on stderr so far."""
        return bytes(self._stderr).decode(errors="replace")

    def cleanup(self) -> None:
        """End what is left of the driver and the processes it started (by their pids)."""
        self.remember_family()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for child in self._family.values():
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(self._family.values()), timeout=10)


def lines_of(path: Path) -> tuple[list[dict], bytes]:
    """Every complete line of a JSONL file, parsed (each must parse), and what follows
    the last newline (a line cut short, or b"")."""
    data = Path(path).read_bytes()
    body, _, tail = data.rpartition(b"\n")
    lines = [orjson.loads(line) for line in body.split(b"\n") if line.strip()] if body else []
    return lines, tail


def scalable(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The `scalable` command, as a user runs it."""
    command = [str(SCALABLE)] if SCALABLE.exists() else [sys.executable, "-m", "scalable_otel.cli"]
    return subprocess.run(
        [*command, *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=120
    )
