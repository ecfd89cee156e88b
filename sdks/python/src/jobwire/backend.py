"""The backend's client of the REST API: create, read, list, cancel and resume jobs, report on
jobs you run yourself, and mint subscription tokens. :class:`Backend` blocks; :class:`AsyncBackend`
is the same API for ``asyncio`` apps. Errors are :class:`~jobwire.errors.JobwireError` subclasses
carrying the registry's code.

What each method sends and returns is written once, without I/O, in ``_backend_calls``; the two
classes only send those calls."""

from __future__ import annotations

import functools
from types import TracebackType
from typing import Any, Callable, Coroutine, Generic, ParamSpec, TypeVar, overload

import httpx

from . import _backend_calls as calls
from ._backend_calls import JobStatus
from ._http import Call, Endpoint, base_url, tls

__all__ = ["AsyncBackend", "Backend", "JobStatus"]

P = ParamSpec("P")
T = TypeVar("T")


class _Method(Generic[P, T]):
    """One call of ``_backend_calls`` as a method of both shells: it blocks on a :class:`Backend`
    and is a coroutine on an :class:`AsyncBackend`, with the call's parameters and docstring."""

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self._build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> _Method[P, T]: ...

    @overload
    def __get__(self, instance: Backend, owner: type[Any]) -> Callable[P, T]: ...

    @overload
    def __get__(self, instance: AsyncBackend, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, instance: Backend | AsyncBackend | None, owner: type[Any]) -> Any:
        return self if instance is None else instance._bind(self._build)


class _BackendApi:
    """The methods both shells have, declared once."""

    create_job = _Method(calls.create_job)
    get_job = _Method(calls.get_job)
    get_result = _Method(calls.get_result)
    list_jobs = _Method(calls.list_jobs)
    cancel_job = _Method(calls.cancel_job)
    resume_job = _Method(calls.resume_job)
    report = _Method(calls.report)
    report_many = _Method(calls.report_many)
    mint_token = _Method(calls.mint_token)


class Backend(_BackendApi):
    """A blocking client for backends (a ``backend`` or ``admin`` API key).

    >>> with Backend("http://127.0.0.1:7070", api_key) as jobwire:
    ...     job = jobwire.create_job("transcription", input={"files": ["a.mp3"]}, owner={"tenant": "acme", "user": "u1"})
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0, client: httpx.Client | None = None) -> None:
        self._endpoint = Endpoint(base_url(url), api_key)
        self._client = client or httpx.Client(timeout=timeout, verify=tls())

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _bind(self, build: Callable[P, Call[T]]) -> Callable[P, T]:
        @functools.wraps(build)
        def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return self._endpoint.send(self._client, build(*args, **kwargs))

        return method


class AsyncBackend(_BackendApi):
    """The :class:`Backend` API for ``asyncio``: every method is a coroutine."""

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0, client: httpx.AsyncClient | None = None) -> None:
        self._endpoint = Endpoint(base_url(url), api_key)
        self._client = client or httpx.AsyncClient(timeout=timeout, verify=tls())

    async def __aenter__(self) -> AsyncBackend:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _bind(self, build: Callable[P, Call[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(build)
        async def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self._endpoint.send_async(self._client, build(*args, **kwargs))

        return method
