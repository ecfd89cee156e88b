"""The backend's REST calls without I/O: what each method of :class:`~jobwire.Backend` and
:class:`~jobwire.AsyncBackend` sends, and what it returns from the answer. The two classes are thin
shells that send these calls, one blocking and one with ``asyncio``."""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

from ._http import Call, job_path, present, result_error
from .errors import JobwireError
from .reducer import JobState

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]


def create_job(
    type: str,
    *,
    input: Any = None,
    owner: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    dispatch: bool | None = None,
    max_attempts: int | None = None,
    stages: Sequence[str | Mapping[str, Any]] | None = None,
    **extra: Any,
) -> Call[JobState]:
    """Creates a job (``201``) or, for a known ``idempotency_key``, returns the job it created.

    ``dispatch=False`` for jobs you run yourself and report on with :meth:`report`. ``stages``
    declares the job's stage plan (names, ``{"name", "weight"}`` or ``{"name", "from", "to"}``)
    on servers with stage plans. Other keyword arguments (deadlines such as ``timeout``,
    ``queueTimeout``, ``heartbeatTimeout``) are sent as given.
    """
    body = present(
        type=type,
        input=input,
        owner=None if owner is None else dict(owner),
        idempotencyKey=idempotency_key,
        dispatch=dispatch,
        maxAttempts=max_attempts,
        stages=None if stages is None else [stage if isinstance(stage, str) else dict(stage) for stage in stages],
    )
    # Deadlines (`timeout`, `queueTimeout`, `heartbeatTimeout`) and fields newer servers take pass through as given.
    body.update(extra)
    return Call("POST", "/v1/jobs", body)


def get_job(job_id: str) -> Call[JobState]:
    """The job's state."""
    return Call("GET", job_path(job_id))


def get_result(job_id: str) -> Call[Any]:
    """The job's result in full (``None`` while it has none), also one too large for an event,
    which the server keeps apart (the state then has ``result: None`` and ``resultRef``)."""
    return Call("GET", job_path(job_id, "/result"), read=lambda answer: answer["result"])


def list_jobs(
    *,
    status: JobStatus | None = None,
    type: str | None = None,
    tenant: str | None = None,
    user: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[dict[str, Any]]:
    """One page, newest first: ``{"jobs": [summary…], "nextCursor": str | None}``."""
    query = present(status=status, type=type, tenant=tenant, user=user, limit=limit, cursor=cursor)
    return Call("GET", "/v1/jobs", params={key: str(value) for key, value in query.items()})


def cancel_job(job_id: str, reason: str | None = None) -> Call[JobState]:
    """Cancels a queued or running job (a running one's worker is told to stop)."""
    return Call("POST", job_path(job_id, "/cancel"), present(reason=reason))


def resume_job(job_id: str) -> Call[JobState]:
    """Re-queues a failed or cancelled job with its last checkpoint."""
    return Call("POST", job_path(job_id, "/resume"), {})


def report(job_id: str, events: Sequence[Mapping[str, Any]]) -> Call[dict[str, Any]]:
    """Appends events (``{"type": "progress", "percent": 40}``…) to a job you run yourself; a batch is atomic."""
    return Call("POST", job_path(job_id, "/events"), {"events": list(events)})


def report_many(writes: Sequence[Mapping[str, Any]]) -> Call[list[dict[str, Any] | JobwireError]]:
    """Appends to many jobs in one request (``[{"jobId", "events"}]``); a refused write comes back as its error, in its place."""
    return Call("POST", "/v1/events", {"writes": [dict(write) for write in writes]}, read=_results_of)


def mint_token(
    *,
    job_ids: Sequence[str] | None = None,
    tenant: str | None = None,
    user: str | None = None,
    rights: Sequence[str] | None = None,
    ttl: int | None = None,
) -> Call[dict[str, str]]:
    """Mints a subscription token through the server, which checks the jobs are yours: ``{"token", "expiresAt"}``."""
    body = present(
        jobIds=None if job_ids is None else list(job_ids),
        tenant=tenant,
        user=user,
        rights=None if rights is None else list(rights),
        ttl=ttl,
    )
    return Call("POST", "/v1/tokens", body)


def _results_of(answer: Any) -> list[dict[str, Any] | JobwireError]:
    return [result_error(result) if "error" in result else result for result in answer["results"]]
