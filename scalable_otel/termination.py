"""SIGTERM while a run is recorded: the run closes as interrupted, then the process exits."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

from . import semconv as sc

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # 143, what a shell reports for a SIGTERM death


class Termination:
    """SIGTERM while a run is recorded: `SystemExit(143)` in the main thread.

    Slurm sends SIGTERM to a job it preempts or cancels, then SIGKILL; without a handler
    Python dies at once and the run stays `running`. With this one, a `with ScalableSession`
    block is left through `__exit__`, which closes the run as interrupted. The handler is
    set only from the main thread, while a session records a run, after any handler set
    before it (which runs first); the last session to close puts that one back. A SIGTERM
    that arrives while the main thread closes a session waits until the close is done.
    """

    def __init__(self):
        self.sessions: set = set()
        self.previous = None
        self.installed = False
        self.closing = 0  # sessions the main thread is closing
        self.pending = False
        self.lock = threading.Lock()

    def add(self, session) -> None:
        with self.lock:
            self.sessions.add(session)
            if self.installed or threading.current_thread() is not threading.main_thread():
                return
            previous = signal.getsignal(signal.SIGTERM)
            if previous is signal.SIG_IGN or previous is None:
                return  # ignored on purpose, or set outside Python: left alone
            self.previous = previous
            signal.signal(signal.SIGTERM, self)
            self.installed = True

    def begin_close(self) -> bool:
        """Count a close done by the main thread; True when it was counted."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self.closing += 1
        return True

    def end_close(self, session, counted: bool) -> None:
        """The session is closed; a SIGTERM held back during the close now exits."""
        with self.lock:
            self.sessions.discard(session)
            if counted:
                self.closing -= 1
            main = threading.current_thread() is threading.main_thread()
            if not self.sessions and self.installed and main:
                if signal.getsignal(signal.SIGTERM) is self:  # unless replaced since
                    signal.signal(signal.SIGTERM, self.previous)
                self.installed = False
            pending = self.pending and main and not self.closing
            if pending:
                self.pending = False
        if pending:
            raise SystemExit(SIGTERM_EXIT_CODE)

    def __call__(self, signum, frame) -> None:
        previous = self.previous
        if callable(previous):
            previous(signum, frame)
        if not self.sessions:  # still set after a close in another thread: act as before
            if previous is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)
            return
        for session in list(self.sessions):
            session._terminated = True
        if self.closing:
            self.pending = True
            return
        raise SystemExit(SIGTERM_EXIT_CODE)


TERMINATION = Termination()


def exit_status(exc_type) -> str | None:
    """The run status for leaving a session or a client's block by `exc_type` (None: no
    exception): interrupted by Ctrl-C, SIGTERM or a cancelled asyncio task (what
    `asyncio.run` does to its task at Ctrl-C), else failed."""
    if exc_type is None:
        return None
    stopped = (KeyboardInterrupt, SystemExit, asyncio.CancelledError)
    return sc.RUN_INTERRUPTED if issubclass(exc_type, stopped) else sc.RUN_FAILED
