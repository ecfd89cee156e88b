"""The worker's half of the HTTP API: one coroutine per endpoint, one attempt per call (callers retry)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, TypeVar

import httpx

from .. import _http
from .._http import Call, job_path
from .._retry import transient_status
from ..errors import ConnectionFailedError, JobwireError

WorkerOperation = Literal["claim", "heartbeat", "signals", "events", "release", "checkpoint"]
T = TypeVar("T")

# Seconds a long-poll may take beyond its `wait` before the worker gives up on the connection.
_LONG_POLL_SLACK = 15.0
_REQUEST_TIMEOUT = 30.0
# Most finished jobs' writes one claim carries (the server's limit on `done`).
_MAX_CARRIED = 1_000
# The longest finished jobs' writes wait for a claim that is about to go out (the worker sends
# them itself when it will not claim): a safety net, not the usual path.
_CLAIM_WINDOW = 0.05


class WorkerRequestError(JobwireError):
    """A request of the worker that failed: the server's code (``lease_lost``, ``job_finished``…),
    or ``network_error`` / ``timeout`` when no answer came. ``transient`` says whether it is retried."""

    operation: str

    def __init__(self, operation: str, error: JobwireError) -> None:
        message = str(error)
        # A connection error already names the request ("claim: …"): named once.
        super().__init__(error.code, message if message.startswith(f"{operation}: ") else f"{operation}: {message}", error.details, error.status)
        self.operation = operation

    @property
    def transient(self) -> bool:
        """No answer, a 5xx, a 408 or a 429: the same request may succeed later."""
        return transient_status(self.status)


@dataclass
class Claim:
    job: dict[str, Any]
    lease: dict[str, Any]
    """``{"token", "expiresAt", "leaseMs"}``: every write carries the token."""


@dataclass
class _PendingWrite:
    job_id: str
    body: dict[str, Any]
    size: int
    future: asyncio.Future[dict[str, Any]] = field(repr=False)


class WorkerApi:
    def __init__(
        self,
        url: str,
        api_key: str,
        bulk: tuple[int, int] | None,
        client: httpx.AsyncClient | None = None,
        on_answer: Callable[[], None] = lambda: None,
    ) -> None:
        self._endpoint = _http.Endpoint(_http.base_url(url), api_key)
        # Told of every request the server answered (all but a transient failure): an outage is over.
        self._on_answer = on_answer
        # Writes of several jobs issued together go out as one `POST /v1/events` within (events, bytes).
        self._bulk = bulk
        self._pending: list[_PendingWrite] = []
        self._client = client or _http_client(64, 32)
        # Claims go on a connection of their own, which stop() can half-close (end_claim_gently).
        self._claims = client or _http_client(1, 1)
        # Whether the server takes `max` on claims (several jobs per request); learnt on first use.
        self.batch_claims: bool | None = None
        # Whether the server takes finished jobs' last writes in claims (`done`); until it says otherwise.
        self.carry_done = True
        # Whether the server takes `ran` in a release; until it says otherwise.
        self._release_unrun = True
        # Set by the worker while a claim is about to go out: finished jobs' writes wait for it.
        self.claim_coming = False

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._claims is not self._client:
            await self._claims.aclose()

    def end_claim_gently(self) -> bool:
        """Half-closes the connection of the claim in flight (ends its sending side) and says whether it
        could: the node then hears of it before it answers (and gives the claim's jobs back), or has
        answered, and the answer is still read, so the worker can give them back. Dropped instead, an
        answer the node had just sent was lost and its jobs waited for their leases. False when no
        claim is in flight, or the HTTP stack is not the one this reaches into (httpx over httpcore):
        then the claim is cancelled as before."""
        if self._claims is self._client:
            return False
        try:
            for connection in self._claims._transport._pool.connections:  # type: ignore[attr-defined]
                if connection.is_idle():
                    continue
                # A socket.socket, or asyncio's TransportSocket around one (which has shutdown too).
                raw = connection._connection._network_stream.get_extra_info("socket")
                if raw is not None:
                    raw.shutdown(socket.SHUT_WR)
                    return True
        except (AttributeError, OSError):
            pass
        return False

    async def claim(self, types: list[str], worker: str, lease_ms: int, wait: float, max_jobs: int, *, carry: bool = True) -> tuple[list[Claim], bool]:
        """Jobs and their leases (an empty list when none came within ``wait`` seconds), and whether the
        request carried the last writes of jobs that just finished (``done``): such a claim is answered
        at once, job or not. A server that refuses ``done`` or ``max`` is sent what it expects from then on."""
        self.claim_coming = False
        body: dict[str, Any] = {"types": types, "worker": worker, "leaseMs": lease_ms, "wait": wait}
        if self.batch_claims is not False:
            body["max"] = max_jobs
        carried = self._take_final_writes() if carry and self.carry_done and self.batch_claims is not False else []
        if carried:
            body["done"] = [{"jobId": write.job_id, **write.body} for write in carried]
        try:
            answer = await self._post("claim", "/v1/workers/claim", body, wait + _LONG_POLL_SLACK, client=self._claims)
        except BaseException as error:
            # Whether the writes were applied is unknown: they go again on their own (a repeated
            # batch number is a retry the server recognizes).
            self._requeue(carried)
            field = (error.details or {}).get("field") if isinstance(error, WorkerRequestError) and error.code == "invalid_request" else None
            if field == "done" or (field == "max" and "max" in body):
                # An older server refuses the unknown field.
                self.carry_done = False
                if field == "max":
                    self.batch_claims = False
                return await self.claim(types, worker, lease_ms, wait, max_jobs)
            if carried and isinstance(error, WorkerRequestError) and error.status in (400, 413):
                # Refused as a whole (too large, say) while it carried writes: they go on their own,
                # each answered for itself, and the claim again without them. A refused key is no
                # matter of what the claim carried.
                return await self.claim(types, worker, lease_ms, wait, max_jobs, carry=False)
            raise
        if "max" in body:
            self.batch_claims = True
        if carried:
            if isinstance(answer, dict) and isinstance(answer.get("done"), list):
                self._answer_writes(carried, answer["done"])
            else:
                self.carry_done = False
                self._requeue(carried)
        if answer is None:
            return [], bool(carried)
        if isinstance(answer, dict) and isinstance(answer.get("claims"), list):
            return [Claim(one["job"], one["lease"]) for one in answer["claims"]], bool(carried)
        return [Claim(answer["job"], answer["lease"])], False

    def _take_final_writes(self) -> list[_PendingWrite]:
        """The waiting writes that end their job, within one bulk request's limits, taken to ride in a claim."""
        if self._bulk is None or not self._pending:
            return []
        max_events, max_bytes = self._bulk
        taken: list[_PendingWrite] = []
        left: list[_PendingWrite] = []
        events = size = 0
        for write in self._pending:
            if write.future.done():
                continue
            count = len(write.body["events"])
            last = write.body["events"][-1]["type"] if count else None
            fits = len(taken) < _MAX_CARRIED and events + count <= max_events and size + write.size <= max_bytes
            if last in ("completed", "failed") and fits:
                taken.append(write)
                events += count
                size += write.size + len(write.job_id) + 16
            else:
                left.append(write)
        self._pending = left
        return taken

    def _requeue(self, writes: list[_PendingWrite]) -> None:
        for write in writes:
            if not write.future.done():
                self._enqueue(write)

    def _enqueue(self, write: _PendingWrite) -> None:
        if not self._pending:
            loop = asyncio.get_running_loop()
            flush = lambda: _http.spawn(self._flush_writes())  # noqa: E731
            # While a claim is about to go out, the finished jobs' writes wait a moment for it to take them.
            if self.claim_coming:
                loop.call_later(_CLAIM_WINDOW, flush)
            else:
                loop.call_soon(flush)
        self._pending.append(write)

    def send_held(self) -> None:
        """No claim is coming after all: the writes waiting for one go on their own, now."""
        self.claim_coming = False
        if self._pending:
            asyncio.get_running_loop().call_soon(lambda: _http.spawn(self._flush_writes()))

    def append_events(self, job_id: str, body: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Appends one job's batch. Batches of several jobs issued in the same loop turn share one
        ``POST /v1/events``; each is still answered, or refused, on its own."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        if self._bulk is None:
            task = _http.spawn(self._append_one(job_id, body))
            _chain(task, future)
            return future
        self._enqueue(_PendingWrite(job_id, body, len(_http.encode(body)), future))
        return future

    async def _append_one(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self._post("events", job_path(job_id, "/events"), body)
        return answer

    async def _flush_writes(self) -> None:
        writes = [write for write in self._pending if not write.future.done()]
        self._pending = []
        assert self._bulk is not None
        max_events, max_bytes = self._bulk
        # Split into requests that fit the server's limits, keeping each job's writes in order.
        groups: list[list[_PendingWrite]] = []
        group: list[_PendingWrite] = []
        events = size = 0
        for write in writes:
            count = len(write.body["events"])
            if group and (events + count > max_events or size + write.size > max_bytes):
                groups.append(group)
                group, events, size = [], 0, 0
            group.append(write)
            events += count
            size += write.size + len(write.job_id) + 16
        if group:
            groups.append(group)
        await asyncio.gather(*(self._send_group(one) for one in groups))

    async def _send_group(self, writes: list[_PendingWrite]) -> None:
        if len(writes) == 1:
            await self._settle(writes[0])
            return
        try:
            answer = await self._post("events", "/v1/events", {"writes": [{"jobId": w.job_id, **w.body} for w in writes]})
        except WorkerRequestError as error:
            # Refused as a whole for one write's sake (a malformed event): send each on its own, so
            # the others are not held hostage. Anything else (no answer, 5xx, 401): each retries.
            if 400 <= error.status < 500 and error.status not in (401, 403, 408, 429):
                await asyncio.gather(*(self._settle(write) for write in writes))
            else:
                for write in writes:
                    _resolve(write.future, error=error)
            return
        self._answer_writes(writes, answer.get("results", []) if isinstance(answer, dict) else [])

    def _answer_writes(self, writes: list[_PendingWrite], results: list[dict[str, Any]]) -> None:
        """Each write settled with its own result of a bulk answer: appended, or refused with the server's error."""
        for index, write in enumerate(writes):
            result = results[index] if index < len(results) else None
            if result is None:
                _resolve(write.future, error=WorkerRequestError("events", ConnectionFailedError("invalid_response", "the bulk answer is missing a result")))
            elif "error" in result:
                _resolve(write.future, error=WorkerRequestError("events", _http.result_error(result)))
            else:
                _resolve(write.future, {k: v for k, v in result.items() if k != "jobId"})

    async def _settle(self, write: _PendingWrite) -> None:
        try:
            _resolve(write.future, await self._append_one(write.job_id, write.body))
        except WorkerRequestError as error:
            _resolve(write.future, error=error)

    async def heartbeat(self, job_id: str, lease: str, lease_ms: int) -> dict[str, Any]:
        answer: dict[str, Any] = await self._post("heartbeat", job_path(job_id, "/heartbeat"), {"lease": lease, "leaseMs": lease_ms})
        return answer

    async def release(self, job_id: str, lease: str, reason: str, ran: bool = True) -> None:
        """``ran=False`` (no handler ran the job) is sent only then, so the attempt does not count; a
        server that predates the field refuses it, and the job is released without it."""
        path = job_path(job_id, "/release")
        body = {"lease": lease, "reason": reason}
        if not ran and self._release_unrun:
            try:
                await self._post("release", path, {**body, "ran": False})
                return
            except WorkerRequestError as error:
                if not (error.code == "invalid_request" and (error.details or {}).get("field") == "ran"):
                    raise
                self._release_unrun = False
        await self._post("release", path, body)

    async def checkpoint(self, job_id: str) -> Any:
        """A job's checkpoint in full (``GET /v1/jobs/:id/checkpoint``), for one too large to come with the claim."""
        return await self._send("checkpoint", Call("GET", job_path(job_id, "/checkpoint"), read=lambda answer: answer["checkpoint"], what="checkpoint"))

    async def signals(self, jobs: list[dict[str, str]], wait: float) -> list[dict[str, str]]:
        """Long-poll: the jobs among ``jobs`` no longer running under their lease (empty after ``wait`` s)."""
        answer = await self._post("signals", "/v1/workers/signals", {"jobs": jobs, "wait": wait}, wait + _LONG_POLL_SLACK)
        signals: list[dict[str, str]] = answer["signals"]
        return signals

    async def _post(self, operation: WorkerOperation, path: str, body: Any, timeout: float = _REQUEST_TIMEOUT, client: httpx.AsyncClient | None = None) -> Any:
        return await self._send(operation, Call("POST", path, body, timeout=timeout, what=operation), client)

    async def _send(self, operation: WorkerOperation, call: Call[T], client: httpx.AsyncClient | None = None) -> T:
        try:
            answer = await self._endpoint.send_async(client or self._client, call)
        except JobwireError as error:
            failed = WorkerRequestError(operation, error)
            # A refusal is an answer too; a 503 or 429 is not: the outage, or the overload, goes on.
            if not failed.transient:
                self._on_answer()
            raise failed from error.__cause__
        self._on_answer()
        return answer


def _http_client(connections: int, kept_alive: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=_REQUEST_TIMEOUT, limits=httpx.Limits(max_connections=connections, max_keepalive_connections=kept_alive), verify=_http.tls())


def _resolve(future: asyncio.Future[dict[str, Any]], result: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result or {})


def _chain(task: asyncio.Task[dict[str, Any]], future: asyncio.Future[dict[str, Any]]) -> None:
    def done(finished: asyncio.Task[dict[str, Any]]) -> None:
        if future.done():
            return
        if finished.cancelled():
            future.cancel()
        elif finished.exception() is not None:
            future.set_exception(finished.exception())  # type: ignore[arg-type]
        else:
            future.set_result(finished.result())

    task.add_done_callback(done)

    def cancelled(outer: asyncio.Future[dict[str, Any]]) -> None:
        if outer.cancelled():
            task.cancel()

    future.add_done_callback(cancelled)


def details_of(error: BaseException) -> Mapping[str, Any]:
    return error.details or {} if isinstance(error, JobwireError) else {}
