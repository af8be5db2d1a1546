"""The guard of an OTLP exporter: what it counts lost, and whom the close waits for."""

import socket

from scalable_otel.exporters.backends import _Guard


def test_a_failed_batch_stays_lost_when_a_later_one_succeeds():
    guard = _Guard("logs", "here")
    guard.offer(10)
    guard.result(False, 4, "refused")  # the SDK does not send a failed batch again
    guard.result(True, 6)
    assert (guard.dropped, guard.failed) == (4, False)
    guard.offer(3)  # still queued when the run ended: not confirmed, so counted
    assert guard.dropped == 7


def test_a_failed_backend_is_skipped_only_while_it_refuses_connections():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        back = _Guard("traces", "here", listening.getsockname())
        back.result(False, 1, "refused")
        back.closing = True
        assert back.skip() is False  # it came back: the run's last spans are sent to it
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # bound, not listening: refused
        down = _Guard("traces", "here", bound.getsockname())
        down.result(False, 1, "refused")
        assert down.skip() is True  # not left to the exporter's retries
        down.closing = True
        assert down.skip() is True
        bound.listen(1)  # back, but the close tried it once already
        assert down.skip() is True
    running = _Guard("traces", "here", ("127.0.0.1", 9))
    assert running.skip() is False  # not failed: never skipped
