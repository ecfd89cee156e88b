"""One way to send a request and read Jobwire's answer, shared by the backend, the worker and the watcher."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Coroutine

import httpx

from .errors import ConnectionFailedError, JobwireError, error_from_body

USER_AGENT = "jobwire-python/0.1.0"


def base_url(url: str) -> str:
    return url.rstrip("/")


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


def answer_of(response: httpx.Response) -> Any:
    """The JSON body of a 2xx answer (``None`` for 204); the typed error for any other."""
    text = response.text
    if not response.is_success:
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = None  # a proxy's HTML error page: the status is what decides a retry
        raise error_from_body(parsed, response.status_code)
    if response.status_code == 204 or text == "":
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        # A truncated answer: whether it was applied is unknown, so it counts as no answer.
        raise ConnectionFailedError("invalid_response", "The answer is not JSON") from error


def connection_error(error: httpx.HTTPError, what: str) -> JobwireError:
    if isinstance(error, httpx.TimeoutException):
        return ConnectionFailedError("timeout", f"{what}: no answer in time ({type(error).__name__})")
    return ConnectionFailedError("network_error", f"{what}: {error}")


def is_transient(error: BaseException) -> bool:
    """No answer, a 5xx, a 408 or a 429: the same request may succeed later."""
    if isinstance(error, ConnectionFailedError):
        return True
    if isinstance(error, JobwireError):
        return error.status >= 500 or error.status in (408, 429)
    return isinstance(error, httpx.HTTPError)


_background: set["asyncio.Task[Any]"] = set()


def spawn(coroutine: Coroutine[Any, Any, Any]) -> "asyncio.Task[Any]":
    """Starts a task the caller does not await, holding a reference until it is done (the event
    loop keeps only weak ones, so an unreferenced task may be collected mid-flight)."""
    task = asyncio.get_running_loop().create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task
