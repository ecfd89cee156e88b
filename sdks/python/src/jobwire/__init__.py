"""Jobwire for Python: run jobs in workers, create and manage them from backends, and watch them live.

- :class:`Worker` — claims jobs of the types it handles and runs their handlers (``def`` or ``async def``).
- :class:`Backend` / :class:`AsyncBackend` — create, get, list, cancel, resume, report, mint tokens.
- :func:`watch_job` / :func:`follow_job` — follow one job (SSE with exact resume, or long-polling).
- :func:`mint_subscription_token`, :func:`verify_webhook` — offline tokens and webhook signatures.
"""

from .backend import AsyncBackend, Backend
from .errors import (
    ERROR_REGISTRY,
    JOB_ERROR_REGISTRY,
    AuthenticationError,
    ConflictError,
    ConnectionFailedError,
    ForbiddenError,
    InvalidRequestError,
    JobwireError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
)
from .reducer import JobEvent, JobState, ReducerError, apply_event, reduce_events
from .tokens import SubscriptionToken, WebhookSignatureError, mint_subscription_token, verify_webhook, webhook_signature
from .watch import Update, follow_job, watch_job
from .worker import (
    AbortReason,
    BatchLimits,
    JobAborted,
    JobContext,
    JobFailure,
    RetryableError,
    SyncJobContext,
    Worker,
    WorkerRequestError,
)

__version__ = "0.1.0"

__all__ = [
    "ERROR_REGISTRY",
    "JOB_ERROR_REGISTRY",
    "AbortReason",
    "AsyncBackend",
    "AuthenticationError",
    "Backend",
    "BatchLimits",
    "ConflictError",
    "ConnectionFailedError",
    "ForbiddenError",
    "InvalidRequestError",
    "JobAborted",
    "JobContext",
    "JobEvent",
    "JobFailure",
    "JobState",
    "JobwireError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ReducerError",
    "RetryableError",
    "ServerError",
    "SubscriptionToken",
    "SyncJobContext",
    "Update",
    "WebhookSignatureError",
    "Worker",
    "WorkerRequestError",
    "apply_event",
    "follow_job",
    "mint_subscription_token",
    "reduce_events",
    "verify_webhook",
    "watch_job",
    "webhook_signature",
]
