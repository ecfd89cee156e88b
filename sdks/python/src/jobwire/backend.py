"""The backend's client of the REST API: create, read, list, cancel and resume jobs, report on
jobs you run yourself, and mint subscription tokens. :class:`Backend` blocks; :class:`AsyncBackend`
is the same API for ``asyncio`` apps. Errors are :class:`~jobwire.errors.JobwireError` subclasses
carrying the registry's code."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal, Mapping, Sequence
from urllib.parse import quote

import httpx

from . import _http
from .errors import JobwireError, error_from_body
from .reducer import JobState

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]


def _create_body(
    type: str,
    input: Any,
    owner: Mapping[str, str] | None,
    idempotency_key: str | None,
    dispatch: bool | None,
    max_attempts: int | None,
    stages: Sequence[str | Mapping[str, Any]] | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type}
    if input is not None:
        body["input"] = input
    if owner is not None:
        body["owner"] = dict(owner)
    if idempotency_key is not None:
        body["idempotencyKey"] = idempotency_key
    if dispatch is not None:
        body["dispatch"] = dispatch
    if max_attempts is not None:
        body["maxAttempts"] = max_attempts
    if stages is not None:
        body["stages"] = [stage if isinstance(stage, str) else dict(stage) for stage in stages]
    # Deadlines (`timeout`, `queueTimeout`, `heartbeatTimeout`) and fields newer servers take pass through as given.
    body.update(extra)
    return body


def _list_query(**filters: Any) -> dict[str, str]:
    return {key: str(value) for key, value in filters.items() if value is not None}


def _token_body(job_ids: Sequence[str] | None, tenant: str | None, user: str | None, rights: Sequence[str] | None, ttl: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if job_ids is not None:
        body["jobIds"] = list(job_ids)
    if tenant is not None:
        body["tenant"] = tenant
    if user is not None:
        body["user"] = user
    if rights is not None:
        body["rights"] = list(rights)
    if ttl is not None:
        body["ttl"] = ttl
    return body


def _results_of(answer: Any) -> list[dict[str, Any] | JobwireError]:
    out: list[dict[str, Any] | JobwireError] = []
    for result in answer["results"]:
        if "error" in result:
            out.append(_error_of_result(result))
        else:
            out.append(result)
    return out


def _error_of_result(result: dict[str, Any]) -> JobwireError:
    from .errors import ERROR_REGISTRY

    code = result["error"].get("code")
    spec = ERROR_REGISTRY.get(code) if isinstance(code, str) else None
    return error_from_body(result, spec.status if spec is not None else 500)


def _job_path(job_id: str, tail: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{tail}"


class Backend:
    """A blocking client for backends (a ``backend`` or ``admin`` API key).

    >>> with Backend("http://127.0.0.1:7070", api_key) as jobwire:
    ...     job = jobwire.create_job("transcription", input={"files": ["a.mp3"]}, owner={"tenant": "acme", "user": "u1"})
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0, client: httpx.Client | None = None) -> None:
        self._url = _http.base_url(url)
        self._key = api_key
        self._client = client or httpx.Client(timeout=timeout)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def create_job(
        self,
        type: str,
        *,
        input: Any = None,
        owner: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        dispatch: bool | None = None,
        max_attempts: int | None = None,
        stages: Sequence[str | Mapping[str, Any]] | None = None,
        **extra: Any,
    ) -> JobState:
        """Creates a job (``201``) or, for a known ``idempotency_key``, returns the job it created.

        ``dispatch=False`` for jobs you run yourself and report on with :meth:`report`. ``stages``
        declares the job's stage plan (names, ``{"name", "weight"}`` or ``{"name", "from", "to"}``)
        on servers with stage plans. Other keyword arguments (deadlines such as ``timeout``,
        ``queueTimeout``, ``heartbeatTimeout``) are sent as given.
        """
        body = _create_body(type, input, owner, idempotency_key, dispatch, max_attempts, stages, extra)
        result: JobState = self._request("POST", "/v1/jobs", body)
        return result

    def get_job(self, job_id: str) -> JobState:
        result: JobState = self._request("GET", _job_path(job_id))
        return result

    def get_result(self, job_id: str) -> Any:
        """The job's result in full (``None`` while it has none), also one too large for an event,
        which the server keeps apart (the state then has ``result: None`` and ``resultRef``)."""
        return self._request("GET", _job_path(job_id, "/result"))["result"]

    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        type: str | None = None,
        tenant: str | None = None,
        user: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page, newest first: ``{"jobs": [summary…], "nextCursor": str | None}``."""
        query = _list_query(status=status, type=type, tenant=tenant, user=user, limit=limit, cursor=cursor)
        result: dict[str, Any] = self._request("GET", "/v1/jobs", params=query)
        return result

    def cancel_job(self, job_id: str, reason: str | None = None) -> JobState:
        result: JobState = self._request("POST", _job_path(job_id, "/cancel"), {} if reason is None else {"reason": reason})
        return result

    def resume_job(self, job_id: str) -> JobState:
        """Re-queues a failed or cancelled job with its last checkpoint."""
        result: JobState = self._request("POST", _job_path(job_id, "/resume"), {})
        return result

    def report(self, job_id: str, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Appends events (``{"type": "progress", "percent": 40}``…) to a job you run yourself; a batch is atomic."""
        result: dict[str, Any] = self._request("POST", _job_path(job_id, "/events"), {"events": list(events)})
        return result

    def report_many(self, writes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any] | JobwireError]:
        """Appends to many jobs in one request (``[{"jobId", "events"}]``); a refused write comes back as its error, in its place."""
        return _results_of(self._request("POST", "/v1/events", {"writes": [dict(write) for write in writes]}))

    def mint_token(
        self,
        *,
        job_ids: Sequence[str] | None = None,
        tenant: str | None = None,
        user: str | None = None,
        rights: Sequence[str] | None = None,
        ttl: int | None = None,
    ) -> dict[str, str]:
        """Mints a subscription token through the server, which checks the jobs are yours: ``{"token", "expiresAt"}``."""
        result: dict[str, str] = self._request("POST", "/v1/tokens", _token_body(job_ids, tenant, user, rights, ttl))
        return result

    def _request(self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None) -> Any:
        try:
            response = self._client.request(
                method,
                f"{self._url}{path}",
                content=None if body is None else _http.encode(body),
                headers=_http.headers(self._key, body is not None),
                params=params,
            )
        except httpx.HTTPError as error:
            raise _http.connection_error(error, f"{method} {path}") from error
        return _http.answer_of(response)


class AsyncBackend:
    """The :class:`Backend` API for ``asyncio``: every method is a coroutine."""

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0, client: httpx.AsyncClient | None = None) -> None:
        self._url = _http.base_url(url)
        self._key = api_key
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> AsyncBackend:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def create_job(
        self,
        type: str,
        *,
        input: Any = None,
        owner: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        dispatch: bool | None = None,
        max_attempts: int | None = None,
        stages: Sequence[str | Mapping[str, Any]] | None = None,
        **extra: Any,
    ) -> JobState:
        body = _create_body(type, input, owner, idempotency_key, dispatch, max_attempts, stages, extra)
        result: JobState = await self._request("POST", "/v1/jobs", body)
        return result

    async def get_job(self, job_id: str) -> JobState:
        result: JobState = await self._request("GET", _job_path(job_id))
        return result

    async def get_result(self, job_id: str) -> Any:
        """See :meth:`Backend.get_result`."""
        return (await self._request("GET", _job_path(job_id, "/result")))["result"]

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        type: str | None = None,
        tenant: str | None = None,
        user: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        query = _list_query(status=status, type=type, tenant=tenant, user=user, limit=limit, cursor=cursor)
        result: dict[str, Any] = await self._request("GET", "/v1/jobs", params=query)
        return result

    async def cancel_job(self, job_id: str, reason: str | None = None) -> JobState:
        result: JobState = await self._request("POST", _job_path(job_id, "/cancel"), {} if reason is None else {"reason": reason})
        return result

    async def resume_job(self, job_id: str) -> JobState:
        result: JobState = await self._request("POST", _job_path(job_id, "/resume"), {})
        return result

    async def report(self, job_id: str, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("POST", _job_path(job_id, "/events"), {"events": list(events)})
        return result

    async def report_many(self, writes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any] | JobwireError]:
        return _results_of(await self._request("POST", "/v1/events", {"writes": [dict(write) for write in writes]}))

    async def mint_token(
        self,
        *,
        job_ids: Sequence[str] | None = None,
        tenant: str | None = None,
        user: str | None = None,
        rights: Sequence[str] | None = None,
        ttl: int | None = None,
    ) -> dict[str, str]:
        result: dict[str, str] = await self._request("POST", "/v1/tokens", _token_body(job_ids, tenant, user, rights, ttl))
        return result

    async def _request(self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None) -> Any:
        try:
            response = await self._client.request(
                method,
                f"{self._url}{path}",
                content=None if body is None else _http.encode(body),
                headers=_http.headers(self._key, body is not None),
                params=params,
            )
        except httpx.HTTPError as error:
            raise _http.connection_error(error, f"{method} {path}") from error
        return _http.answer_of(response)
