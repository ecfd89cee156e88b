"""What a handler throws to fail a job, and what a job's cancellation looks like."""

from __future__ import annotations

from typing import Any, Literal

AbortReason = Literal["cancelled", "finished", "lease_lost", "stopped", "rejected", "timed_out"]
"""Why a job's context was aborted:

- ``cancelled``: someone cancelled the job; nothing the handler reports is sent any more.
- ``finished``: the job was finished by someone else.
- ``lease_lost``: the lease lapsed (no heartbeat got through in time) or the job is gone.
- ``stopped``: the worker is stopping and the handler ran out of time; reports made within the
  grace period are still delivered, then the lease is released and the job re-queued with its
  last checkpoint.
- ``rejected``: the server refused the job's events; the job is reported failed with its code.
- ``timed_out``: the job ran past its timeout; the server failed it with ``timed_out`` (or re-queued
  it, when its type retries timeouts). Nothing the handler does is reported any more.
"""

_ABORT_MESSAGES: dict[str, str] = {
    "cancelled": "The job was cancelled",
    "finished": "The job was finished elsewhere",
    "lease_lost": "The worker lost its lease on the job",
    "stopped": "The worker is stopping",
    "rejected": "The server refused the job's events",
    "timed_out": "The job ran past its timeout",
}

_MAX_CODE = 100
_MAX_MESSAGE = 2_000


class JobFailure(Exception):
    """Raise from a handler to fail the job with your own ``code`` and ``message`` (both shown to
    the people watching). Not retried unless ``retryable``.

    >>> raise JobFailure("unsupported_codec", "b.mp3 uses a codec we cannot decode")
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class RetryableError(JobFailure):
    """Raise when trying again may succeed (an upstream timeout, a rate limit): the job is reported
    ``failed`` with ``retryable: true``, the server re-queues it while attempts remain, and a worker
    claims it again with its last checkpoint. ``code`` defaults to ``handler_error``."""

    def __init__(self, message: str, *, code: str = "handler_error") -> None:
        super().__init__(code, message, retryable=True)


class JobAborted(Exception):
    """Raised by ``ctx.raise_if_cancelled()`` (and by ``checkpoint()``) once the job's context aborted."""

    def __init__(self, reason: AbortReason, message: str | None = None) -> None:
        super().__init__(message or _ABORT_MESSAGES.get(reason, "The job is no longer this worker's"))
        self.reason: AbortReason = reason


def failure_of(thrown: BaseException) -> dict[str, Any]:
    """What a raised exception becomes on the wire: ``{code: exc.code or 'handler_error', message, retryable}``."""
    code = getattr(thrown, "code", None)
    message = str(thrown) or type(thrown).__name__
    return {
        "code": code if isinstance(code, str) and 0 < len(code) <= _MAX_CODE else "handler_error",
        "message": message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…",
        "retryable": isinstance(thrown, JobFailure) and thrown.retryable,
    }
