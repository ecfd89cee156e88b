"""When to try a request again and how long to wait first: the decisions the worker and the watcher share."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable


# The shortest round of an empty poll: a server that answers at once (a zero --poll-max-wait, a
# proxy that cuts long requests) is asked again after this, not at once.
MIN_POLL = 1.0


@dataclass(frozen=True)
class Backoff:
    """Retry delays: exponential from ``base`` seconds, capped at ``max``, with full jitter."""

    base: float = 0.1
    max: float = 10.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        return rand() * min(self.max, self.base * 2.0 ** min(attempt - 1, 30))


def server_outage(status: int) -> bool:
    """A 5xx, but not a 501: the server does not implement the request at all (one that is not a
    Jobwire server, say), which no retry outlives."""
    return status >= 500 and status != 501


def transient_status(status: int) -> bool:
    """No answer (status 0), a 5xx but a 501 (:func:`server_outage`), a 408 or a 429: the same request may succeed later."""
    return status == 0 or server_outage(status) or status in (408, 429)
