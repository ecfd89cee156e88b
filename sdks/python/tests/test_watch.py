"""Watching a job: SSE and long-poll, exact resume after a dropped connection, tokens, errors."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import TOKEN_SECRET, Server, start_server, stop_server
from jobwire import AsyncBackend, Backend, ConnectionFailedError, NotFoundError, Update, follow_job, mint_subscription_token, watch_job
from jobwire import JobContext, RetryableError, Worker
from jobwire.reducer import JobState, apply_event
from jobwire import watch as watch_module

GUARD = 60.0


class CuttableProxy:
    """A TCP proxy in front of the server whose connections the test can cut, recording each request's head."""

    def __init__(self, target: str, refuse_streams: bool = False) -> None:
        # refuse_streams: answer SSE requests with an HTML page, as a misconfigured proxy might.
        self.refuse_streams = refuse_streams
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.requests: list[str] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse_streams:
            head = await reader.read(65536)
            self.requests.append(head.decode(errors="replace").lower())
            if b"/stream" in head.split(b"\r\n", 1)[0]:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                await writer.drain()
                writer.close()
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
            upstream_writer.write(head)
        else:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        self._writers += [writer, upstream_writer]
        first = not self.refuse_streams

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bool) -> None:
            nonlocal first
            try:
                while data := await source.read(65536):
                    if record and first:
                        self.requests.append(data.decode(errors="replace").lower())
                        first = False
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer, True), pipe(upstream_reader, writer, False))

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def follow_over_sse(url: str, job_id: str, credential: str) -> tuple[asyncio.Queue[Update], asyncio.Future[None]]:
    """Watches a job over SSE in the background, each update put on the queue; returns once the snapshot came."""
    seen = asyncio.Queue[Update]()

    async def follow() -> None:
        async for update in watch_job(url, job_id, credential, transport="sse"):
            seen.put_nowait(update)

    following = asyncio.ensure_future(asyncio.wait_for(follow(), GUARD))
    await asyncio.wait_for(seen.get(), GUARD)  # the snapshot
    return seen, following


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_a_1000_event_chunk_stream_arrives_in_order(server: Server, transport: str) -> None:
    async def scenario() -> None:
        async with AsyncBackend(server.url, server.api_key) as backend:
            job = await backend.create_job("dictation", dispatch=False)
            subscribed = asyncio.Event()
            updates: list[Update] = []

            async def follow() -> None:
                async for update in watch_job(server.url, job["id"], server.api_key, transport=transport, poll_wait=5):  # type: ignore[arg-type]
                    updates.append(update)
                    subscribed.set()

            following = asyncio.ensure_future(asyncio.wait_for(follow(), GUARD))
            await asyncio.wait_for(subscribed.wait(), GUARD)
            for batch in range(10):
                await backend.report(job["id"], [{"type": "chunk", "text": f"{batch * 100 + i} "} for i in range(100)])
            await backend.report(job["id"], [{"type": "completed"}])
            await following
            final = await backend.get_job(job["id"])
        chunks = [update.event["data"]["text"] for update in updates if update.event is not None and update.event["type"] == "chunk"]
        assert chunks == [f"{i} " for i in range(1000)]
        assert updates[0].kind == "snapshot" and [update.kind for update in updates[1:]] == ["event"] * (len(updates) - 1)
        assert updates[-1].state == {**final, "queuePosition": updates[-1].state["queuePosition"]}

    asyncio.run(scenario())


def test_clients_share_one_tls_setup_so_watching_many_jobs_costs_no_ca_bundle_each(memory_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new httpx client read the CA bundle again (about 20 ms of CPU): a watch makes a client of
    its own, so watching a thousand jobs spent some 20 s before the first snapshot, and a backend made
    per request paid it on every call. The SDK's clients now share one TLS setup."""
    server = memory_server
    loads: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args or kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)

    async def scenario() -> None:
        async with AsyncBackend(server.url, server.api_key) as backend:
            jobs = [await backend.create_job("shared-tls", dispatch=False) for _ in range(5)]
            for job in jobs:
                await backend.report(job["id"], [{"type": "completed", "result": None}])
        for job in jobs:
            states = [update.state["status"] async for update in watch_job(server.url, job["id"], server.api_key)]
            assert states[-1] == "completed"
        for _ in range(5):
            with Backend(server.url, server.api_key) as one:
                assert one.get_job(jobs[0]["id"])["status"] == "completed"

    asyncio.run(asyncio.wait_for(scenario(), 60))
    # Read once for the whole process (none at all here if an earlier test already made it).
    assert len(loads) <= 1, loads


def test_a_shared_client_with_every_connection_streaming_says_so(memory_server: Server) -> None:
    """Each watch holds one connection of its client while it streams: a client shared by more
    watches than its pool allows (httpx's default is 100) left the rest waiting, said only as a timeout."""
    server = memory_server

    async def scenario() -> None:
        async with AsyncBackend(server.url, server.api_key) as backend:
            first, second = [await backend.create_job("pool", dispatch=False) for _ in range(2)]
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=httpx.Timeout(30.0, read=None, pool=0.2)) as client:
            holding = watch_job(server.url, first["id"], server.api_key, client=client)
            assert (await holding.__anext__()).kind == "snapshot"
            with pytest.raises(ConnectionFailedError, match="every connection of the HTTP client .* is in use"):
                async for _ in watch_job(server.url, second["id"], server.api_key, client=client, max_retries=0):
                    pass
            await holding.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_resumes_exactly_after_a_dropped_connection_with_last_event_id(memory_server: Server) -> None:
    server = memory_server

    async def scenario() -> None:
        proxy = CuttableProxy(server.url)
        via = await proxy.start()
        async with AsyncBackend(server.url, server.api_key) as backend:
            job = await backend.create_job("dictation", dispatch=False)
            seen, following = await follow_over_sse(via, job["id"], server.api_key)
            await backend.report(job["id"], [{"type": "chunk", "text": f"a{i} "} for i in range(5)])
            before = [await asyncio.wait_for(seen.get(), GUARD) for _ in range(6)]  # started + 5 chunks
            last_seq = before[-1].state["seq"]
            proxy.cut()
            await backend.report(job["id"], [{"type": "chunk", "text": f"b{i} "} for i in range(5)])
            await backend.report(job["id"], [{"type": "completed", "result": "ok"}])
            await following
            after: list[Update] = []
            while not seen.empty():
                after.append(seen.get_nowait())
            final = await backend.get_job(job["id"])
        await proxy.close()
        # The reconnect asked for what followed the last applied seq, and got exactly that: no snapshot, no repeat, no gap.
        assert any(f"last-event-id: {last_seq}" in request for request in proxy.requests[1:])
        assert [update.kind for update in after] == ["event"] * 6
        assert [update.state["seq"] for update in after] == list(range(last_seq + 1, last_seq + 7))
        assert after[-1].state["text"] == "".join(f"a{i} " for i in range(5)) + "".join(f"b{i} " for i in range(5))
        assert after[-1].state["result"] == "ok" and after[-1].state["seq"] == final["seq"]

    asyncio.run(scenario())


def test_each_drop_after_a_working_stream_backs_off_as_a_first_failure(memory_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long watch whose stream works and drops now and then: every reconnect waits a first retry's
    delay, not one growing with every drop of the watch's life (up to max_retry_delay each)."""
    server = memory_server
    attempts: list[int] = []
    original = watch_module._Follower.backoff

    async def recording(self: Any, error: BaseException) -> None:
        attempts.append(self.failures + 1)
        await original(self, error)

    monkeypatch.setattr(watch_module._Follower, "backoff", recording)

    async def scenario() -> None:
        proxy = CuttableProxy(server.url)
        via = await proxy.start()
        async with AsyncBackend(server.url, server.api_key) as backend:
            job = await backend.create_job("dictation", dispatch=False)
            seen, following = await follow_over_sse(via, job["id"], server.api_key)
            for drop in range(4):
                await backend.report(job["id"], [{"type": "chunk", "text": f"{drop} "}])
                await asyncio.wait_for(seen.get(), GUARD)  # the stream delivered: it works
                if drop == 0:
                    await asyncio.wait_for(seen.get(), GUARD)  # the implicit start came first
                proxy.cut()
            await backend.report(job["id"], [{"type": "completed", "result": "ok"}])
            await following
        await proxy.close()
        assert len(attempts) >= 4
        assert attempts == [1] * len(attempts)

    asyncio.run(scenario())


def test_falls_back_to_long_polling_when_a_proxy_does_not_pass_the_event_stream(memory_server: Server) -> None:
    server = memory_server

    async def scenario() -> None:
        proxy = CuttableProxy(server.url, refuse_streams=True)
        via = await proxy.start()
        async with AsyncBackend(server.url, server.api_key) as backend:
            job = await backend.create_job("dictation", dispatch=False)
            subscribed = asyncio.Event()
            states: list[dict[str, Any]] = []

            async def follow() -> None:
                async for update in watch_job(via, job["id"], server.api_key, poll_wait=5):
                    states.append(update.state)
                    subscribed.set()

            following = asyncio.ensure_future(asyncio.wait_for(follow(), GUARD))
            await asyncio.wait_for(subscribed.wait(), GUARD)
            await backend.report(job["id"], [{"type": "chunk", "text": "polled "}, {"type": "completed", "result": 1}])
            await following
        await proxy.close()
        assert any("/stream" in request for request in proxy.requests)
        assert any("/events?" in request for request in proxy.requests)
        assert states[-1]["status"] == "completed" and states[-1]["text"] == "polled "

    asyncio.run(scenario())


def test_follow_job_blocks_and_works_with_an_offline_subscription_token(memory_server: Server) -> None:
    server = memory_server
    with Backend(server.url, server.api_key) as backend:
        job = backend.create_job("render", owner={"tenant": "acme", "user": "ada"}, dispatch=False)
        backend.report(job["id"], [{"type": "progress", "stage": "rendering", "percent": 50}, {"type": "completed", "result": {"frames": 2}}])
    token = mint_subscription_token(TOKEN_SECRET, job_ids=[job["id"]])
    states: list[dict[str, Any]] = [update.state for update in follow_job(server.url, job["id"], token.token)]
    # A finished job: one snapshot, and the watch ends by itself.
    assert len(states) == 1 and states[0]["status"] == "completed" and states[0]["result"] == {"frames": 2}


def test_watching_a_job_that_does_not_exist_raises_not_found(memory_server: Server) -> None:
    async def scenario() -> None:
        with pytest.raises(NotFoundError) as missing:
            async for _ in watch_job(memory_server.url, "no-such-job", memory_server.api_key):
                pass
        assert missing.value.code == "job_not_found"

    asyncio.run(scenario())


def test_a_server_that_is_not_there_is_logged_each_attempt_and_max_retries_ends_the_watch(caplog: pytest.LogCaptureFixture) -> None:
    # Port 9 (discard) refuses connections here. Before max_retries, the watch tried for ever, silently.
    async def scenario() -> None:
        with pytest.raises(ConnectionFailedError) as failed:
            async for _ in watch_job("http://127.0.0.1:9", "job_anything", "jw_not_a_key_at_all", max_retries=2, max_retry_delay=0.05):
                pass
        assert failed.value.code == "network_error" and "(http://127.0.0.1:9)" in str(failed.value)

    with caplog.at_level("WARNING", logger="jobwire.watch"):
        asyncio.run(asyncio.wait_for(scenario(), GUARD))
    lines = [record.getMessage() for record in caplog.records if record.name == "jobwire.watch"]
    assert len(lines) == 2 and "; attempt 1 failed, the next in " in lines[0] and "; attempt 2 failed, the next in " in lines[1]
    assert all(line.startswith("jobwire watch job_anything: ") and "watch job_anything: watch" not in line and "(http://127.0.0.1:9)" in line for line in lines)
    with pytest.raises(ValueError, match="max_retries"):
        asyncio.run(anext(watch_job("http://127.0.0.1:9", "job_anything", "k" * 20, max_retries=-1)))


def test_a_watch_from_the_last_seq_of_a_finished_job_ends_at_once(memory_server: Server) -> None:
    server = memory_server
    with Backend(server.url, server.api_key) as backend:
        job = backend.create_job("render", dispatch=False)
        done = backend.report(job["id"], [{"type": "completed", "result": 1}])

    async def scenario() -> list[Update]:
        return [update async for update in watch_job(server.url, job["id"], server.api_key, after=done["seq"], transport="sse")]

    # The server answers 204 (nothing after the end): no update, no reconnect loop.
    assert asyncio.run(asyncio.wait_for(scenario(), GUARD)) == []


def test_a_server_that_does_not_hold_long_polls_is_asked_at_most_once_a_second(tmp_path: Path) -> None:
    """With ``--poll-max-wait 0`` every poll is answered at once; the watcher asked again at once,
    hundreds of times a second, for as long as the job ran. An empty answer now waits out a second."""
    server = start_server("memory", tmp_path, "--poll-max-wait", "0")
    requests = 0

    async def count(_request: httpx.Request) -> None:
        nonlocal requests
        requests += 1

    async def scenario() -> tuple[int, float]:
        async with AsyncBackend(server.url, server.api_key) as backend, httpx.AsyncClient(event_hooks={"request": [count]}, timeout=httpx.Timeout(30.0, read=None)) as http:
            job = await backend.create_job("quiet", dispatch=False)
            subscribed = asyncio.Event()

            async def follow() -> None:
                async for _ in watch_job(server.url, job["id"], server.api_key, transport="poll", client=http):
                    subscribed.set()

            loop = asyncio.get_running_loop()
            following = asyncio.ensure_future(asyncio.wait_for(follow(), GUARD))
            await asyncio.wait_for(subscribed.wait(), GUARD)
            first, started = requests, loop.time()
            await asyncio.sleep(2.5)
            polls, elapsed = requests - first, loop.time() - started
            await backend.report(job["id"], [{"type": "completed"}])
            await following
            return polls, elapsed

    try:
        polls, elapsed = asyncio.run(scenario())
    finally:
        stop_server(server)
    # Polls that found nothing go out at least a second apart (a little less, for the event loop's clock).
    assert polls <= elapsed / 0.99 + 1, f"{polls} polls in {elapsed:.2f} s"


def test_a_server_that_accepts_and_never_answers_does_not_hold_the_watch() -> None:
    """The SSE request's answer was awaited without a timeout (the client reads without one), so a
    server that accepted the connection and hung held the watch for good on its first request. The
    answer's head now counts against ``first_message_timeout``: SSE is tried again, then polling."""

    async def scenario() -> list[str]:
        held: list[asyncio.StreamWriter] = []

        async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)  # never answered

        silent = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        paths: list[str] = []

        async def record(request: httpx.Request) -> None:
            paths.append(request.url.path)

        async def follow(http: httpx.AsyncClient) -> None:
            async for _ in watch_job(f"http://127.0.0.1:{port}", "job_AAAAAAAAAAAAAAAAAAAAAA", "any", first_message_timeout=0.5, max_retry_delay=0.5, client=http):
                pass

        try:
            async with httpx.AsyncClient(event_hooks={"request": [record]}, timeout=httpx.Timeout(30.0, read=None)) as http:
                following = asyncio.ensure_future(follow(http))
                try:
                    while not any(path.endswith("/events") for path in paths):
                        assert not following.done(), following
                        await asyncio.sleep(0.05)
                finally:
                    following.cancel()
        finally:
            for writer in held:
                writer.transport.abort()
            silent.close()
        return paths

    paths = asyncio.run(asyncio.wait_for(scenario(), GUARD))
    assert [path.rsplit("/", 1)[-1] for path in paths[:3]] == ["stream", "stream", "events"]


def test_a_stream_that_got_heartbeats_was_not_silent() -> None:
    """Two silent streams in a row mean something holds the stream back (a buffering proxy), and
    polling takes over. A stream that got a heartbeat before it dropped was not silent: it resets
    that count as a message does, so one silent stream after it is a first one, and SSE is tried
    again (a heartbeat used to leave the count alone, and the next silent stream switched to polling)."""

    async def scenario() -> list[str]:
        paths: list[str] = []
        held: list[asyncio.StreamWriter] = []

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            paths.append(head.split(" ", 2)[1].split("?")[0])
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            if len(paths) == 2:
                writer.write(b": heartbeat\n\n")  # the second stream is live, then drops
                await writer.drain()
                writer.close()
            else:
                held.append(writer)  # the others say nothing at all

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def follow() -> None:
            async for _ in watch_job(f"http://127.0.0.1:{port}", "job_AAAAAAAAAAAAAAAAAAAAAA", "any", first_message_timeout=0.5, max_retry_delay=0.5):
                pass

        following = asyncio.ensure_future(follow())
        try:
            while len(paths) < 4:
                assert not following.done(), following
                await asyncio.sleep(0.05)
        finally:
            following.cancel()
            for writer in held:
                writer.transport.abort()
            server.close()
        return paths

    paths = asyncio.run(asyncio.wait_for(scenario(), GUARD))
    # Silent, live then dropped, silent (a first one again), and SSE once more: not the poll route.
    assert [path.rsplit("/", 1)[-1] for path in paths[:4]] == ["stream", "stream", "stream", "stream"]


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_each_update_keeps_the_state_after_it_text_and_rollback_included(memory_server: Server, transport: str) -> None:
    """The watch keeps the streamed text apart (appending copied the whole text at each chunk: a
    million characters in 10-character chunks took 31 s of CPU) and builds an update's state when it is
    read: every update, read only once the job has ended, still holds the state right after it —
    the text at that moment, before and after a retry cut it back to the checkpoint — and the last
    equals the server's."""
    server = memory_server

    async def scenario() -> tuple[list[Update], JobState]:
        worker = Worker(server.url, server.api_key, poll_wait=2)

        @worker.handle("dictation")
        async def dictation(job: dict[str, Any], ctx: JobContext) -> None:
            if job["attempt"] == 1:
                ctx.chunk("Once ")
                ctx.chunk("upon ")
                await ctx.checkpoint({"words": 2})
                ctx.chunk("a tim")
                raise RetryableError("the model went away", code="upstream_timeout")
            ctx.chunk("a ")
            ctx.chunk("time.")

        await worker.start()
        try:
            async with AsyncBackend(server.url, server.api_key) as backend:
                job = await backend.create_job("dictation", max_attempts=2)
                updates = [update async for update in watch_job(server.url, job["id"], server.api_key, transport=transport, poll_wait=5)]  # type: ignore[arg-type]
                return updates, await backend.get_job(job["id"])
        finally:
            await worker.stop()

    updates, final = asyncio.run(asyncio.wait_for(scenario(), GUARD))
    assert updates[0].kind == "snapshot"
    # The states the reducer reaches from the snapshot, event by event, read now.
    expected = updates[0].state
    for update in updates[1:]:
        assert update.event is not None
        expected = apply_event(expected, update.event)
        assert update.state == expected
    texts = [(update.event["type"], update.state["text"]) for update in updates[1:] if update.event is not None]
    requeued = next(i for i, (kind, _) in enumerate(texts) if kind == "requeued")
    assert texts[requeued - 1 : requeued + 1] == [("chunk", "Once upon a tim"), ("requeued", "Once upon ")]
    assert texts[-1] == ("completed", "Once upon a time.")
    assert updates[-1].state == {**final, "queuePosition": updates[-1].state["queuePosition"]}
    with pytest.raises(AttributeError):
        updates[-1].kind = "snapshot"  # type: ignore[misc]


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_a_watch_after_a_seq_yields_each_later_event_with_the_state_it_made(memory_server: Server, transport: str) -> None:
    """``after=N``: the events after N, each update's state the log folded up to it. Before, with no
    state to fold into, every event was dropped: polling ended having yielded nothing, and SSE
    reconnected from N for good."""
    server = memory_server
    with Backend(server.url, server.api_key) as backend:
        job = backend.create_job("dictation", dispatch=False)
        backend.report(job["id"], [{"type": "chunk", "text": "Once "}, {"type": "progress", "percent": 40}])
        backend.report(job["id"], [{"type": "chunk", "text": "upon "}, {"type": "chunk", "text": "a time."}])
        backend.report(job["id"], [{"type": "completed", "result": {"words": 4}}])
        final = backend.get_job(job["id"])
    log = httpx.get(f"{server.url}/v1/jobs/{job['id']}/events", params={"after": "0"}, headers={"authorization": f"Bearer {server.api_key}"}).json()["events"]
    states = [apply_event(None, log[0])]
    for event in log[1:]:
        states.append(apply_event(states[-1], event))

    async def watch(after: int) -> list[Update]:
        return [update async for update in watch_job(server.url, job["id"], server.api_key, after=after, transport=transport, poll_wait=5)]  # type: ignore[arg-type]

    for after in (0, 1, 3, final["seq"] - 1):
        updates = asyncio.run(asyncio.wait_for(watch(after), GUARD))
        assert [update.event["seq"] for update in updates if update.event is not None] == list(range(after + 1, final["seq"] + 1))
        assert [update.kind for update in updates] == ["event"] * len(updates)
        assert [update.state for update in updates] == states[after:]
    assert states[-1] == {**final, "queuePosition": states[-1]["queuePosition"]}


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_a_watch_after_a_seq_the_log_no_longer_holds_starts_from_a_reset_snapshot(tmp_path: Path, transport: str) -> None:
    server = start_server("memory", tmp_path, "--max-events-per-job", "10")
    try:
        with Backend(server.url, server.api_key) as backend:
            job = backend.create_job("dictation", dispatch=False)
            for i in range(20):
                backend.report(job["id"], [{"type": "chunk", "text": f"{i} "}])
            backend.report(job["id"], [{"type": "completed"}])
            final = backend.get_job(job["id"])

        async def watch() -> list[Update]:
            return [update async for update in watch_job(server.url, job["id"], server.api_key, after=5, transport=transport, poll_wait=5)]  # type: ignore[arg-type]

        updates = asyncio.run(asyncio.wait_for(watch(), GUARD))
    finally:
        stop_server(server)
    assert [(update.kind, update.reset) for update in updates] == [("snapshot", True)]
    assert updates[0].state == final


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_text_with_unicode_line_separators_arrives_whole(memory_server: Server, transport: str) -> None:
    """JSON leaves U+2028, U+2029 and U+0085 unescaped, and httpx's line reader split SSE lines at
    them (as str.splitlines does): a chunk holding one cut its data line in two, and the watch
    died with a JSONDecodeError. Lines end at CR, LF or CRLF only."""
    server = memory_server
    texts = ["model said:\u2028a line", " and\u2029a paragraph", " \x85 NEL \x0c \x1c\x1d\x1e \x0b", " \r\n\r end"]
    with Backend(server.url, server.api_key) as backend:
        job = backend.create_job("dictation", dispatch=False)

    async def scenario() -> list[Update]:
        updates: list[Update] = []
        async with AsyncBackend(server.url, server.api_key) as writer:

            async def follow() -> None:
                async for update in watch_job(server.url, job["id"], server.api_key, transport=transport, poll_wait=5, max_retries=0):  # type: ignore[arg-type]
                    updates.append(update)

            following = asyncio.ensure_future(follow())
            while not updates:
                await asyncio.sleep(0.01)
            for text in texts:
                await writer.report(job["id"], [{"type": "chunk", "text": text}])
            await writer.report(job["id"], [{"type": "completed"}])
            await asyncio.wait_for(following, GUARD)
        return updates

    updates = asyncio.run(asyncio.wait_for(scenario(), GUARD))
    assert [update.event["data"]["text"] for update in updates if update.event is not None and update.event["type"] == "chunk"] == texts
    assert updates[-1].state["text"] == "".join(texts)


def test_event_stream_lines_end_at_cr_lf_or_crlf_however_the_reads_cut_them() -> None:
    stream = "data: a\u2028b\r\ndata: c\rdata: d\n\r\n: beat\r\r\nevent: x\ndata: {\"t\": \"\x85\"}\n\n"
    expected = ["data: a\u2028b", "data: c", "data: d", "", ": beat", "", "event: x", 'data: {"t": "\x85"}', ""]
    for size in (1, 2, 3, 5, len(stream)):
        lines = watch_module._SseLines()
        got = [line for start in range(0, len(stream), size) for line in lines.feed(stream[start : start + size])]
        assert got == expected, size
