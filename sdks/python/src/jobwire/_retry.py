"""When to try a request again and how long to wait first: the decisions the worker and the watcher share."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable


# The shortest round of an empty poll: a server that answers at once (a zero --poll-max-wait, a
# proxy that cuts long requests) is asked again after this, not at once.
MIN_POLL = 1.0


# The longest wait a server's Retry-After can impose on one retry (a misconfigured one would stall the worker).
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class Backoff:
    """Retry delays: exponential from ``base`` seconds, capped at ``max``, with full jitter."""

    base: float = 0.1
    max: float = 10.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        return rand() * min(self.max, self.base * 2.0 ** min(attempt - 1, 30))


def retry_delay(backoff: Backoff, attempt: int, failure: BaseException | None) -> float:
    """The wait before retry number ``attempt`` after ``failure``: the backoff's, and at least what
    the server asked for (``Retry-After``, which Jobwire's errors carry as ``details["retryAfter"]``
    in seconds: a node ``overloaded`` or ``server_busy``, a ``rate_limited`` person), up to a minute."""
    return max(backoff.delay(attempt), retry_after(failure))


def retry_after(failure: BaseException | None) -> float:
    """The wait (seconds) a failure's ``details["retryAfter"]`` asks for; 0 when it asks none."""
    details = getattr(failure, "details", None)
    after = details.get("retryAfter") if isinstance(details, dict) else None
    if isinstance(after, (int, float)) and not isinstance(after, bool) and after > 0:
        return min(float(after), MAX_RETRY_AFTER)
    return 0.0


def server_outage(status: int) -> bool:
    """A 5xx, but not a 501: the server does not implement the request at all (one that is not a
    Jobwire server, say), which no retry outlives."""
    return status >= 500 and status != 501


def transient_status(status: int) -> bool:
    """No answer (status 0), a 5xx but a 501 (:func:`server_outage`), a 408 or a 429: the same request may succeed later."""
    return status == 0 or server_outage(status) or status in (408, 429)
