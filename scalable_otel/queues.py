"""A bounded queue that counts what it turns away: records waiting in the driver.

The scheduler plugin appends a record for each task transition; a thread of the
session takes them for the run's telemetry process. If that process falls behind (a
saturated machine, a stopped process), the records must not pile up in the driver.
"""

from __future__ import annotations

from collections import deque

#: The most items a driver-side queue of a run holds; beyond it new items are dropped and
#: counted (run.json's `telemetry_records_dropped`). About 100 bytes a record: ~10 MB.
RECORD_QUEUE_BOUND = 100_000


class BoundedQueue(deque):
    """A deque whose `append` keeps at most `bound` items and counts the ones it drops.

    Appends stay O(1); `popleft` from another thread is safe, as for a deque.

    >>> q = BoundedQueue(2)
    >>> for i in range(3):
    ...     q.append(i)
    >>> list(q), q.dropped
    ([0, 1], 1)
    """

    def __init__(self, bound: int | None = None):
        super().__init__()
        self.bound = RECORD_QUEUE_BOUND if bound is None else bound
        self.dropped = 0

    def append(self, item) -> None:
        if len(self) < self.bound:
            deque.append(self, item)
        else:
            self.dropped += 1

    def __reduce__(self):  # an empty queue of the same bound (a plugin copied to a scheduler)
        return (type(self), (self.bound,))
