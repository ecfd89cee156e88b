"""The worker: claims jobs, holds their leases, runs handlers and streams their reports."""

from .api import WorkerRequestError
from .context import JobContext, SyncJobContext
from .errors import AbortReason, JobAborted, JobFailure, RetryableError
from .._retry import Backoff
from .outbox import BatchLimits
from .worker import Handler, Worker, WorkerState

__all__ = [
    "AbortReason",
    "Backoff",
    "BatchLimits",
    "Handler",
    "JobAborted",
    "JobContext",
    "JobFailure",
    "RetryableError",
    "SyncJobContext",
    "Worker",
    "WorkerRequestError",
    "WorkerState",
]
