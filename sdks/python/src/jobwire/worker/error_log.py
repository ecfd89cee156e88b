"""The default ``on_error``: a line for each failure, but a few for an outage however long it lasts."""

from __future__ import annotations

import logging
import time
from typing import Callable

from .api import WorkerRequestError

_log = logging.getLogger("jobwire.worker")
# Seconds between two reminders of an outage that goes on.
REMIND_EVERY = 60.0


class ErrorLog:
    """One worker's default ``on_error``: warnings on the ``jobwire.worker`` logger. With the server
    down, every claim, heartbeat and signals poll used to write a line (~1,440 an hour for the claims
    alone). Now a request that failed transiently (no answer, a 5xx, a 408, a 429) is said the first
    time; the same failure again, from whichever request, is only counted, and said again with its
    count at most every :data:`REMIND_EVERY` seconds; a different one is said at once. The first
    answer after them (:meth:`answered`) says the outage is over. Any other failure (a refusal, a
    handler's raise, a lost lease) is said each time.

    ``clock`` (monotonic seconds) may be replaced: a test drives the reminders with it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # The outage going on: its failure said last, and when; its failed requests, since when.
        self._said: str | None = None
        self._said_at = 0.0
        self._failures = 0
        self._since = 0.0

    def __call__(self, error: BaseException, operation: str, job_id: str | None) -> None:
        message = str(error)
        # A request's error already starts with its operation ("claim: …"): said once, not twice.
        said = message[len(operation) + 2 :] if message.startswith(f"{operation}: ") else message
        where = operation if job_id is None else f"{operation} {job_id}"
        if not (isinstance(error, WorkerRequestError) and error.transient):
            # A claim refused for good (not transient) stops the worker.
            stopped = " — the worker has stopped" if operation == "claim" and isinstance(error, WorkerRequestError) else ""
            _log.warning("jobwire worker: %s: %s%s", where, said, stopped)
            return
        now = self.clock()
        if self._failures == 0:
            self._since = now
        self._failures += 1
        if said != self._said:
            self._said, self._said_at = said, now
            _log.warning("jobwire worker: %s: %s", where, said)
        elif now - self._said_at >= REMIND_EVERY:
            self._said_at = now
            _log.warning("jobwire worker: still failing: %d failed requests in the last %.1f s: %s", self._failures, now - self._since, said)

    def answered(self) -> None:
        """The server answered a request: the outage, if one was going on, is over."""
        if self._failures == 0:
            return
        _log.warning("jobwire worker: the server answers again (%d failed requests over %.1f s)", self._failures, self.clock() - self._since)
        self._said = None
        self._failures = 0
