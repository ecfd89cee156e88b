"""Follow a job from Python: Server-Sent Events with exact resume (``Last-Event-ID``), falling back to
long-polling, folding events into the job's state with the same reducer as every other client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
from typing import Any, AsyncGenerator, AsyncIterator, Callable, Iterator, Literal

import httpx

from . import _http
from ._retry import MIN_POLL, Backoff
from .errors import ConnectionFailedError, JobwireError, error_from_stream
from .reducer import JobEvent, JobState, apply_event, is_terminal

_log = logging.getLogger("jobwire.watch")

# Longest silence of a live stream before it is taken for dead: three of the server's default heartbeats.
_IDLE_TIMEOUT = 45.0

UpdateKind = Literal["snapshot", "event", "queue"]
Transport = Literal["auto", "sse", "poll"]


class Update:
    """One change of a watched job: ``state`` is the job's state after it.

    ``kind`` is ``snapshot`` (the whole state, at the start or after the log was trimmed while
    disconnected: ``reset`` is then true, replace what you showed), ``event`` (``event`` applied), or
    ``queue`` (the job moved in its queue: ``state["queuePosition"]``).

    ``state`` is built when first read (then kept): an update whose state nobody reads costs nothing
    for the job's text, so following a long stream of text stays linear in its length. Reading it on
    every update copies the text each time; for streamed text, ``event["data"]["text"]`` of a
    ``chunk`` event is the new part alone.
    """

    __slots__ = ("kind", "event", "reset", "_state", "_build")
    __match_args__ = ("kind", "state", "event", "reset")

    kind: UpdateKind
    event: JobEvent | None
    reset: bool
    _state: JobState | None
    _build: Callable[[], JobState] | None

    def __init__(self, kind: UpdateKind, state: JobState | Callable[[], JobState], event: JobEvent | None = None, reset: bool = False) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "event", event)
        object.__setattr__(self, "reset", reset)
        object.__setattr__(self, "_state", None if callable(state) else state)
        object.__setattr__(self, "_build", state if callable(state) else None)

    @property
    def state(self) -> JobState:
        state: JobState | None = self._state
        if state is None:
            assert self._build is not None
            state = self._build()
            object.__setattr__(self, "_state", state)
            object.__setattr__(self, "_build", None)
        return state

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"an Update cannot be changed ({name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Update):
            return NotImplemented
        return (self.kind, self.event, self.reset, self.state) == (other.kind, other.event, other.reset, other.state)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Update(kind={self.kind!r}, state=…, event={self.event!r}, reset={self.reset!r})"


class _Text:
    """A job's streamed text as the parts it arrived in: appending costs the part, not the text (a
    ``str`` is copied whole by every ``+``); joined once when read. Never shortened: a rewind starts
    a new one, so the updates made before it keep theirs. An update may be read on another thread
    while the watch appends: the lock keeps a join from dropping a part appended meanwhile."""

    __slots__ = ("_parts", "length", "_lock")

    def __init__(self, text: str) -> None:
        self._parts = [text]
        self.length = len(text)
        self._lock = threading.Lock()

    def append(self, part: str) -> None:
        with self._lock:
            self._parts.append(part)
            self.length += len(part)

    def value(self, length: int) -> str:
        """The text when it was ``length`` characters long."""
        with self._lock:
            if len(self._parts) > 1:
                self._parts = ["".join(self._parts)]
            text = self._parts[0]
        return text if length == len(text) else text[:length]


class _SseLines:
    """Splits an event stream's text into lines where the SSE format ends them: at CRLF, LF or CR,
    and nowhere else. httpx's ``aiter_lines`` splits as ``str.splitlines`` does, also at U+2028,
    U+2029, U+0085 and the like, which JSON leaves unescaped: a chunk of text holding one cut its
    ``data:`` line in two, and the watch died on the half line's JSON."""

    __slots__ = ("_tail", "_after_cr")

    def __init__(self) -> None:
        self._tail: list[str] = []
        self._after_cr = False

    def feed(self, text: str) -> list[str]:
        """The lines ``text`` ends (the rest waits for the next text)."""
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF cut between two reads
        self._after_cr = text.endswith("\r")
        parts = _EOL.split(text)
        if len(parts) == 1:
            if text:
                self._tail.append(text)
            return []
        if self._tail:
            self._tail.append(parts[0])
            parts[0] = "".join(self._tail)
            self._tail = []
        if parts[-1]:
            self._tail.append(parts[-1])
        return parts[:-1]


_EOL = re.compile(r"\r\n|\r|\n")


class _Fallback(Exception):
    """The SSE stream cannot be used here (a buffering proxy, a server without it): poll instead."""


async def watch_job(
    url: str,
    job_id: str,
    credential: str,
    *,
    after: int | None = None,
    transport: Transport = "auto",
    poll_wait: float = 25.0,
    first_message_timeout: float = 10.0,
    max_retry_delay: float = 10.0,
    max_retries: int | None = None,
    client: httpx.AsyncClient | None = None,
) -> AsyncIterator[Update]:
    """Yields the job's updates until it ends (completed, failed or cancelled, every event delivered).

    ``credential`` is an API key or a subscription token. Reconnects after a dropped connection from
    the last seq it applied (``Last-Event-ID``): the events that follow are exactly the missing ones,
    or a ``reset`` snapshot when the log no longer holds them. ``after=N`` yields the events after
    seq N, each with the state it made (the log folded up to N first; a ``reset`` snapshot when the
    log no longer starts at the job's first event). ``transport="auto"`` (default) uses
    SSE and falls back to long-polling (``GET …/events?after=&wait=``) when a stream delivers nothing
    within ``first_message_timeout`` seconds or is refused as a stream; ``"sse"`` and ``"poll"`` force
    one. Raises a :class:`~jobwire.errors.JobwireError` for an answer retrying cannot fix
    (``job_not_found``, ``token_expired``…); transient failures are retried with backoff (at most
    ``max_retry_delay`` seconds apart), each logged as a warning on the ``jobwire.watch`` logger;
    ``max_retries`` failed attempts in a row (default: no limit) raise the last one's error
    (:class:`~jobwire.errors.ConnectionFailedError` when no answer came). The watch holds one
    connection of ``client`` while it streams: a client shared by many watches needs
    ``limits=httpx.Limits(max_connections=None)`` (httpx allows 100 by default).
    """
    if max_retries is not None and (isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0):
        raise ValueError(f"max_retries must be a whole number ≥ 0 or None, not {max_retries!r}")
    owned = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None), verify=_http.tls())
    follower = _Follower(http, _http.base_url(url), job_id, credential, after, poll_wait, first_message_timeout, max_retry_delay, max_retries)
    try:
        mode: Transport = "poll" if transport == "poll" else "sse"
        while not follower.done:
            try:
                if mode == "sse":
                    async for update in follower.sse():
                        yield update
                else:
                    async for update in follower.poll():
                        yield update
                follower.failures = 0
            except _Fallback:
                if transport == "sse":
                    raise ConnectionFailedError("network_error", "the SSE stream delivered nothing") from None
                mode = "poll"
            except (ConnectionFailedError, httpx.HTTPError) as error:
                if follower.done:
                    break
                await follower.backoff(error)
            except JobwireError as error:
                if not error.retryable:
                    raise
                await follower.backoff(error)
    finally:
        if owned:
            await http.aclose()


def follow_job(url: str, job_id: str, credential: str, **options: Any) -> Iterator[Update]:
    """:func:`watch_job` for code without an event loop: a blocking iterator of the same updates."""
    loop = asyncio.new_event_loop()
    updates = watch_job(url, job_id, credential, **options)
    assert isinstance(updates, AsyncGenerator)
    try:
        while True:
            try:
                yield loop.run_until_complete(updates.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(updates.aclose())
        loop.close()


class _Follower:
    def __init__(
        self, http: httpx.AsyncClient, base: str, job_id: str, credential: str, after: int | None, poll_wait: float, first_timeout: float, max_delay: float, max_retries: int | None
    ) -> None:
        self.http = http
        self.job_id = job_id
        self.max_retries = max_retries
        self.endpoint = _http.Endpoint(base, credential)
        self.path = _http.job_path(job_id)
        # The job's state with its text left out (""), and the text apart (see _event).
        self.state: JobState | None = None
        self.text = _Text("")
        self.position = after
        self.poll_wait = poll_wait
        self.first_timeout = first_timeout
        self.delays = Backoff(0.25, max_delay)
        self.failures = 0
        self.silent_streams = 0
        self.done = False

    async def backoff(self, error: BaseException) -> None:
        """Waits before the next attempt; raises ``error`` (as a JobwireError) when ``max_retries`` ran out."""
        self.failures += 1
        name = f"watch {self.job_id}"
        known = _http.connection_error(error, name) if isinstance(error, httpx.HTTPError) else error
        if self.max_retries is not None and self.failures > self.max_retries:
            if known is error:
                raise known
            raise known from error
        delay = self.delays.delay(self.failures)
        message = str(known)
        said = message if message.startswith(f"{name}: ") else f"{name}: {message}"
        _log.warning("jobwire %s; attempt %d failed, the next in %.1f s", said, self.failures, delay)
        await asyncio.sleep(delay)

    def _snapshot(self, job: JobState, reset: bool) -> Update:
        self._hold(job)
        self.position = job["seq"]
        self.done = is_terminal(job["status"])
        return Update("snapshot", job, None, reset)

    def _event(self, event: JobEvent) -> Update | None:
        if self.state is None:
            if event["seq"] != 1:
                return None  # nothing to apply it to (see catch_up)
        elif event["seq"] <= self.state["seq"]:
            return None  # already applied (a replay overlapping what we had)
        # The reducer runs on the state without its text (self.state's is always ""): a chunk's
        # text goes to self.text; only the first event and one that rewinds the text (a requeue
        # back to a checkpoint) are applied to the whole.
        if self.state is None or (event["type"] == "requeued" and event["data"].get("textLength") is not None):
            state = self._hold(apply_event(None if self.state is None else self._whole(), event))
        else:
            state = apply_event(self.state, event)
            if event["type"] == "chunk":
                self.text.append(state["text"])
                state["text"] = ""
            self.state = state
        self.position = event["seq"]
        self.done = is_terminal(state["status"])
        return Update("event", self._later(), event)

    def _hold(self, whole: JobState) -> JobState:
        """Keeps ``whole`` as the state without its text (returned), and the text apart."""
        self.state, self.text = {**whole, "text": ""}, _Text(whole["text"])
        return self.state

    async def catch_up(self) -> AsyncIterator[Update]:
        """``after=N`` (N ≥ 1) with no state yet: the events after N come, but each update's state
        needs the state at N, which is the job's log folded up to N. Without it every event was
        dropped, and the watch never ended (SSE reconnected from N for good). When the log no
        longer starts at the job's first event, the state at N cannot be rebuilt: the job's state
        now comes as a ``reset`` snapshot, as when a reconnect finds its position trimmed."""
        target = self.position
        if self.state is not None or target is None or target < 1:
            return
        state: JobState | None = None
        after = 0
        while True:
            answer: dict[str, Any] = await self.endpoint.send_async(self.http, _http.Call("GET", f"{self.path}/events", params={"after": str(after)}, what="poll"))
            snapshot = answer.get("snapshot")
            if snapshot is not None:
                yield self._snapshot(snapshot["job"], True)
                return
            for event in answer.get("events", []):
                if event["seq"] > target:
                    break
                state = apply_event(state, event)
            if (state is not None and state["seq"] >= target) or not answer.get("more"):
                break
            after = answer["next"]
        if state is not None and state["seq"] == target:
            self._hold(state)
        # Else N is past the job's last event: the stream or poll from N says so (position_ahead).

    def _whole(self) -> JobState:
        assert self.state is not None
        return {**self.state, "text": self.text.value(self.text.length)}

    def _later(self) -> Callable[[], JobState]:
        """Builds the state as it is now, when an update's ``state`` is first read."""
        state, text, length = self.state, self.text, self.text.length
        assert state is not None
        return lambda: {**state, "text": text.value(length)}

    def _silent(self, reason: str) -> Exception:
        """Nothing at all within the first-message timeout: once, a failure to retry; twice in a row,
        something holds the stream back (a buffering proxy): polling takes over."""
        self.silent_streams += 1
        if self.silent_streams >= 2:
            return _Fallback()
        return ConnectionFailedError("timeout", reason)

    async def sse(self) -> AsyncIterator[Update]:
        async for caught_up in self.catch_up():
            yield caught_up
        headers = {**_http.headers(self.endpoint.credential), "accept": "text/event-stream"}
        if self.position is not None:
            headers["last-event-id"] = str(self.position)
        async with contextlib.AsyncExitStack() as stack:
            # The answer's head counts against the first-message timeout too: a server that accepted
            # the connection and never answers held the watch for good (the client reads without a timeout).
            try:
                response = await asyncio.wait_for(stack.enter_async_context(self.http.stream("GET", f"{self.endpoint.base}{self.path}/stream", headers=headers)), self.first_timeout)
            except asyncio.TimeoutError:
                raise self._silent("the SSE stream was not answered") from None
            if not response.is_success:
                await response.aread()
                _http.answer_of(response)
            if response.status_code == 204:
                # The job ended at the seq we hold: there is nothing more to stream.
                self.done = True
                return
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise _Fallback()
            # Read as the text comes, each read under the timeout, not each line (asyncio.wait_for
            # per line cost more than the rest of the watch), and split into lines by _SseLines.
            chunks = response.aiter_text()
            lines = _SseLines()
            got_message = False
            event_name: str | None = None
            data: list[str] = []
            while not self.done:
                try:
                    text = await asyncio.wait_for(chunks.__anext__(), self.first_timeout if not got_message else _IDLE_TIMEOUT)
                except asyncio.TimeoutError:
                    if got_message:
                        # Not even a heartbeat (the server sends one every 15 s): the connection is dead.
                        raise ConnectionFailedError("timeout", "the SSE stream went silent") from None
                    raise self._silent("the SSE stream delivered nothing") from None
                except StopAsyncIteration:
                    if self.done:
                        return
                    raise ConnectionFailedError("network_error", "the SSE stream ended before the job did") from None
                for line in lines.feed(text):
                    if self.done:
                        return
                    if line == "":
                        if data:
                            got_message = self._live()
                            update = self._frame(event_name, "\n".join(data))
                            if update is not None:
                                yield update
                        event_name, data = None, []
                        continue
                    if line.startswith(":"):
                        got_message = self._live()  # a heartbeat
                        continue
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "data":
                        data.append(value)
                    elif field == "event":
                        event_name = value

    def _live(self) -> bool:
        """A message or a heartbeat came: the stream works. A drop after this is a first failure again,
        not one more in a row (each reconnect of a long watch waited the longest delay before), and
        the stream was not silent."""
        self.silent_streams = 0
        self.failures = 0
        return True

    def _frame(self, name: str | None, data: str) -> Update | None:
        if name in (None, "message", "recovered"):
            return None
        body: Any = json.loads(data)
        if name == "snapshot":
            return self._snapshot(body["job"], bool(body.get("reset")))
        if name == "queue":
            if self.state is None:
                return None
            self.state = {**self.state, "queuePosition": body.get("position")}
            return Update("queue", self._later())
        if name == "error":
            raise error_from_stream(body)
        return self._event(body)

    async def poll(self) -> AsyncIterator[Update]:
        async for caught_up in self.catch_up():
            yield caught_up
        loop = asyncio.get_running_loop()
        while not self.done:
            params = {"wait": str(self.poll_wait)}
            if self.position is not None:
                params["after"] = str(self.position)
            sent_at = loop.time()
            answer: dict[str, Any] = await self.endpoint.send_async(self.http, _http.Call("GET", f"{self.path}/events", params=params, timeout=self.poll_wait + 15, what="poll"))
            self.failures = 0
            snapshot = answer.get("snapshot")
            if snapshot is not None:
                yield self._snapshot(snapshot["job"], bool(snapshot.get("reset")))
            for event in answer.get("events", []):
                update = self._event(event)
                if update is not None:
                    yield update
            self.position = answer.get("next", self.position)
            if answer.get("done"):
                self.done = True
            elif snapshot is None and not answer.get("events"):
                # Nothing came: a server that does not hold the poll (a zero --poll-max-wait) or a proxy
                # that cuts it short must not be asked again at once (it was, hundreds of times a second).
                await asyncio.sleep(max(0.0, MIN_POLL - (loop.time() - sent_at)))
