"""The SDK's one way to talk to the REST API, without I/O where it can be: a :class:`Call` says what
to send and how to read the answer; :class:`Endpoint` sends it with a blocking or an ``asyncio``
httpx client. Shared by the backend, the worker and the watcher."""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
from dataclasses import dataclass
from typing import Any, Callable, Coroutine, Generic, Mapping, TypeVar
from urllib.parse import quote

import httpx

from .errors import ERROR_REGISTRY, ConnectionFailedError, JobwireError, error_from_body

USER_AGENT = "jobwire-python/0.1.0"

T = TypeVar("T")


@functools.cache
def tls() -> ssl.SSLContext:
    """httpx's default TLS settings, made once: building them (reading the CA bundle) took about
    20 ms of CPU per client, and a watch makes a client of its own: seconds for a few hundred jobs."""
    return httpx.create_ssl_context()


def base_url(url: str) -> str:
    return url.rstrip("/")


def job_path(job_id: str, tail: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{tail}"


def headers(credential: str, json_body: bool = False) -> dict[str, str]:
    out = {"authorization": f"Bearer {credential}", "user-agent": USER_AGENT}
    if json_body:
        out["content-type"] = "application/json"
    return out


def encode(body: Any) -> bytes:
    # Compact separators: the server measures bodies and events in bytes of JSON.
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate cannot be UTF-8: escape it (and everything else non-ASCII) as \uXXXX.
        return json.dumps(body, separators=(",", ":")).encode()


def present(**fields: Any) -> dict[str, Any]:
    """The fields that are not ``None``: a JSON body's optional members."""
    return {key: value for key, value in fields.items() if value is not None}


def _answer(answer: Any) -> Any:
    return answer


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request without its I/O: what to send, and what the caller gets from the answer's JSON."""

    method: str
    path: str
    body: Any = None
    params: Mapping[str, str] | None = None
    read: Callable[[Any], T] = _answer
    timeout: float | None = None
    """Seconds for this request (a long-poll's wait and slack); ``None``: the client's."""
    what: str | None = None
    """How an error names the request; ``"<method> <path>"`` when ``None``."""

    @property
    def name(self) -> str:
        return self.what or f"{self.method} {self.path}"


@dataclass(frozen=True)
class Endpoint:
    """A server and the credential to call it with: sends a :class:`Call` and reads its answer."""

    base: str
    credential: str

    def options(self, call: Call[Any]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "method": call.method,
            "url": f"{self.base}{call.path}",
            "content": None if call.body is None else encode(call.body),
            "headers": headers(self.credential, call.body is not None),
            "params": call.params,
        }
        if call.timeout is not None:
            options["timeout"] = call.timeout
        return options

    def send(self, client: httpx.Client, call: Call[T]) -> T:
        try:
            response = client.request(**self.options(call))
        except httpx.HTTPError as error:
            raise connection_error(error, call.name) from error
        return call.read(answer_of(response))

    async def send_async(self, client: httpx.AsyncClient, call: Call[T]) -> T:
        try:
            response = await client.request(**self.options(call))
        except httpx.HTTPError as error:
            raise connection_error(error, call.name) from error
        return call.read(answer_of(response))


def answer_of(response: httpx.Response) -> Any:
    """The JSON body of a 2xx answer (``None`` for 204); the typed error for any other."""
    text = response.text
    if not response.is_success:
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = None  # a proxy's HTML error page: the status is what decides a retry
        raise error_from_body(parsed, response.status_code, _origin_of(response.request.url))
    if response.status_code == 204 or text == "":
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        # A truncated answer: whether it was applied is unknown, so it counts as no answer.
        raise ConnectionFailedError("invalid_response", "The answer is not JSON") from error


def result_error(result: Mapping[str, Any]) -> JobwireError:
    """The error of one refused write in a bulk answer (``{"jobId", "error": {…}}``), with its registry status."""
    code = result["error"].get("code")
    spec = ERROR_REGISTRY.get(code) if isinstance(code, str) else None
    return error_from_body(result, spec.status if spec is not None else 500)


def connection_error(error: httpx.HTTPError, what: str) -> JobwireError:
    where = _origin(error)
    if isinstance(error, httpx.PoolTimeout):
        # Nothing was sent: the client's own connections were all in use (each watch's stream holds one).
        return ConnectionFailedError(
            "timeout",
            f"{what}: every connection of the HTTP client to {where} is in use (httpx's limits.max_connections, "
            "100 by default; each watch holds one while it streams)",
        )
    if isinstance(error, httpx.TimeoutException):
        return ConnectionFailedError("timeout", f"{what}: no answer in time from {where} ({type(error).__name__})")
    # httpx says "All connection attempts failed" without saying where to: the server is named.
    return ConnectionFailedError("network_error", f"{what}: {error} ({where})")


def _origin_of(url: httpx.URL) -> str:
    """``http://host:port`` of a request's URL."""
    return f"{url.scheme}://{url.netloc.decode()}"


def _origin(error: httpx.HTTPError) -> str:
    """The server a failed request went to (``http://host:port``)."""
    try:
        url = error.request.url
    except RuntimeError:  # an error raised before a request was built
        return "the server"
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


_background: set["asyncio.Task[Any]"] = set()


def spawn(coroutine: Coroutine[Any, Any, Any]) -> "asyncio.Task[Any]":
    """Starts a task the caller does not await, holding a reference until it is done (the event
    loop keeps only weak ones, so an unreferenced task may be collected mid-flight)."""
    task = asyncio.get_running_loop().create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task
