"""Errors as typed exceptions carrying the codes of Jobwire's error registry.

The server answers every error with ``{"error": {"code", "message", "details"?}}``; the SDK raises
the :class:`JobwireError` subclass for its HTTP status, with the same ``code``. A test checks that
:data:`ERROR_REGISTRY` matches the server's registry (``packages/protocol/src/errors.ts``).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, NamedTuple

from ._retry import server_outage


class ErrorSpec(NamedTuple):
    status: int
    retryable: bool
    message: str


ERROR_REGISTRY: dict[str, ErrorSpec] = {
    "invalid_request": ErrorSpec(400, False, "The request is invalid: {reason}"),
    "malformed_json": ErrorSpec(400, False, "The request body is not valid JSON"),
    "unknown_event_type": ErrorSpec(400, False, 'Unknown event type "{type}"'),
    "invalid_position": ErrorSpec(400, False, 'Stream position "{position}" is not a non-negative integer'),
    "unauthorized": ErrorSpec(401, False, "A valid API key or token is required (Authorization: Bearer <credential>)"),
    "invalid_token": ErrorSpec(401, False, "The token was refused: {reason}"),
    "token_expired": ErrorSpec(401, False, "The token expired at {expiredAt}; get a fresh one and resume from the last seq"),
    "forbidden": ErrorSpec(403, False, "This credential may not {action}"),
    "job_not_found": ErrorSpec(404, False, "Job {jobId} does not exist"),
    "route_not_found": ErrorSpec(404, False, "No route {method} {url}"),
    "job_finished": ErrorSpec(409, False, "Job {jobId} is {status}; it takes no more events"),
    "invalid_transition": ErrorSpec(409, False, 'Event "{type}" is not allowed while job {jobId} is {status}'),
    "lease_lost": ErrorSpec(409, False, "This worker no longer holds the lease on job {jobId}: {reason}"),
    "idempotency_conflict": ErrorSpec(409, False, 'Idempotency key "{key}" was already used for a job of another type'),
    "position_ahead": ErrorSpec(409, False, "Position {position} is beyond the last event ({seq}) of job {jobId}"),
    "payload_too_large": ErrorSpec(413, False, "The request body exceeds {limit} bytes"),
    "event_too_large": ErrorSpec(413, False, "Event {index} is {size} bytes; the limit is {limit}"),
    "value_too_large": ErrorSpec(413, False, "The {value} of event {index} is {size} bytes of JSON; the limit is {limit}"),
    "batch_too_large": ErrorSpec(413, False, "A batch holds at most {limit} events"),
    "text_limit_exceeded": ErrorSpec(413, False, "Job {jobId} text would exceed {limit} characters"),
    "item_limit_exceeded": ErrorSpec(413, False, "Job {jobId} would have more than {limit} items"),
    "rate_limited": ErrorSpec(429, True, "Too many {limit}: at most {max} per {window}; retry in {retryAfter} s"),
    "too_many_streams": ErrorSpec(429, True, "Too many open streams for {scope}: at most {max}"),
    "key_not_found": ErrorSpec(404, False, "No API key {keyId}"),
    "unsupported_media_type": ErrorSpec(415, False, "Content-Type must be application/json"),
    "malformed_message": ErrorSpec(400, False, 'A WebSocket message must be a JSON object with a "type": {reason}'),
    "unknown_message_type": ErrorSpec(400, False, 'Unknown message type "{type}"'),
    "message_too_large": ErrorSpec(413, False, "A WebSocket message exceeds {limit} bytes"),
    "slow_consumer": ErrorSpec(503, True, "The stream fell {bytes} bytes behind; reconnect to resume"),
    "unavailable": ErrorSpec(503, True, "The server is not available: {reason}"),
    "server_busy": ErrorSpec(503, True, "The server holds its maximum of {max} connections; retry shortly"),
    "overloaded": ErrorSpec(503, True, "The server is reading {bytes} bytes of request bodies: this body of {size} would pass its limit of {limit}; nothing was done, retry in {retryAfter} s"),
    "internal": ErrorSpec(500, True, "Internal error (request {requestId})"),
}


class JobErrorSpec(NamedTuple):
    retryable: bool
    message: str


JOB_ERROR_REGISTRY: dict[str, JobErrorSpec] = {
    "worker_lost": JobErrorSpec(True, "The worker holding the job stopped heartbeating (its lease lapsed) on the last attempt"),
    "timed_out": JobErrorSpec(True, "The job ran longer than its timeout ({timeoutMs} ms, measured per {per})"),
    "queue_timeout": JobErrorSpec(False, "The job waited unclaimed longer than its queue timeout ({queueTimeoutMs} ms): no worker of its type took it"),
    "runner_lost": JobErrorSpec(False, "The self-run job got no event and no heartbeat for {heartbeatTimeoutMs} ms: its runner is gone"),
    "unwatched": JobErrorSpec(False, "Nobody watched the job for {cancelWhenUnwatchedMs} ms, on any node (a cancel reason)"),
}
"""Codes the server itself ends a job with — a ``failed`` event's ``code``, a ``requeued`` or
``cancelled`` event's ``reason`` — not HTTP errors: a watcher sees them in ``state["error"]``."""


def format_error_message(code: str, details: Mapping[str, Any] | None = None) -> str:
    """Renders a registry template, filling ``{name}`` from ``details``."""
    spec = ERROR_REGISTRY.get(code, ERROR_REGISTRY["internal"])
    values = details or {}
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), spec.message)


class JobwireError(Exception):
    """An error the server answered (or that stands for one), with its registry ``code``.

    ``status`` is the HTTP status, ``retryable`` whether trying again may help, ``details`` the
    server's details (``field``, ``limit``…). Codes the SDK does not know (a newer server) keep their
    code; their ``status`` is the answer's.
    """

    code: str
    status: int
    retryable: bool
    details: dict[str, Any] | None

    def __init__(self, code: str, message: str | None = None, details: Mapping[str, Any] | None = None, status: int | None = None) -> None:
        spec = ERROR_REGISTRY.get(code)
        super().__init__(message if message is not None else format_error_message(code, details))
        self.code = code
        self.status = status if status is not None else (spec.status if spec is not None else 500)
        self.retryable = spec.retryable if spec is not None else server_outage(self.status) or self.status == 429
        self.details = dict(details) if details is not None else None

    @property
    def message(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status}, message={str(self)!r})"


class InvalidRequestError(JobwireError):
    """400: the request is malformed (a bad field, an unknown event type…)."""


class AuthenticationError(JobwireError):
    """401: no credential, or one the server refuses (``unauthorized``, ``invalid_token``, ``token_expired``)."""


class ForbiddenError(JobwireError):
    """403: the credential may not do this."""


class NotFoundError(JobwireError):
    """404: ``job_not_found``, ``key_not_found``, ``route_not_found``."""


class ConflictError(JobwireError):
    """409: the job's state refuses it (``job_finished``, ``lease_lost``, ``idempotency_conflict``…)."""


class PayloadTooLargeError(JobwireError):
    """413: a body, event, batch or text over its limit."""


class RateLimitedError(JobwireError):
    """429: too many creates or streams; retry later."""


class ServerError(JobwireError):
    """5xx: ``internal``, ``unavailable``, ``server_busy``, ``overloaded``, ``slow_consumer``; retrying may help."""


class ConnectionFailedError(JobwireError):
    """No answer came: the server is unreachable or the request timed out (code ``network_error`` or ``timeout``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, status=0)
        self.retryable = True


_by_status: dict[int, type[JobwireError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: InvalidRequestError,
    429: RateLimitedError,
}


def error_from_body(body: object, status: int, origin: str | None = None) -> JobwireError:
    """The typed exception for an error answer (``{"error": {...}}``) with HTTP ``status`` from the
    server at ``origin``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        # A proxy's page, or a server that is not Jobwire at all.
        said = f"HTTP {status}" if origin is None else f"HTTP {status} from {origin}, without a Jobwire error: is it a Jobwire server?"
        return _class_for(status)("internal", said, None, status)
    code: str = error["code"]
    message = error.get("message")
    details = error.get("details")
    return _class_for(status)(
        code,
        message if isinstance(message, str) else None,
        details if isinstance(details, dict) else None,
        status,
    )


def error_from_stream(body: Mapping[str, Any]) -> JobwireError:
    """The typed exception for an in-band stream ``error`` (its status comes from the registry)."""
    code = body.get("code")
    known = code if isinstance(code, str) else "internal"
    spec = ERROR_REGISTRY.get(known)
    status = spec.status if spec is not None else 500
    message = body.get("message")
    details = body.get("details")
    return _class_for(status)(known, message if isinstance(message, str) else None, details if isinstance(details, dict) else None, status)


def _class_for(status: int) -> type[JobwireError]:
    if status >= 500:
        return ServerError
    return _by_status.get(status, JobwireError)
