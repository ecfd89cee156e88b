"""The worker against a real server: handlers sync and async, reports, checkpoints and resume,
cancel reaching a handler, retries, SIGKILL and SIGTERM of a worker process, claims refused for good."""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import json
import random
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import pytest

from conftest import Server, spawn_worker, start_server, stop_server, wait_for_line
from jobwire import AsyncBackend, Backend, BatchLimits, JobContext, JobFailure, RetryableError, SyncJobContext, Worker, WorkerRequestError, watch_job
from jobwire.reducer import JobState
from jobwire.worker import Backoff

# A hang guard for waits on conditions, never a timing assertion: a healthy run takes a fraction of it.
GUARD = 60.0


async def until(server: Server, job_id: str, predicate: Callable[[JobState], bool]) -> JobState:
    """Follows the job until ``predicate`` holds for its state (or it ends); returns that state."""

    async def follow() -> JobState:
        last: JobState | None = None
        async for update in watch_job(server.url, job_id, server.api_key):
            last = update.state
            if predicate(last):
                return last
        assert last is not None
        return last

    return await asyncio.wait_for(follow(), GUARD)


async def run_one(server: Server, worker: Worker, job_type: str, ended: Callable[[JobState], bool], **create: Any) -> JobState:
    """Starts ``worker``, creates one job of ``job_type`` and follows it until ``ended``; stops the worker."""
    await worker.start()
    try:
        async with AsyncBackend(server.url, server.api_key) as backend:
            job = await backend.create_job(job_type, **create)
            return await until(server, job["id"], ended)
    finally:
        await worker.stop()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


# Retries within a few milliseconds: many of them go by while a test waits for a few.
FAST_RETRIES = Backoff(0.01, 0.01)


def test_a_server_that_is_not_there_is_said_in_one_line_naming_it(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 9 (discard) refuses connections here. The line used to read "claim: claim: claim: All
    # connection attempts failed", without the server, and came again at each retry.
    claims = _count_claims(monkeypatch)
    worker = Worker("http://127.0.0.1:9", "jw_not_a_key_at_all", poll_wait=1, backoff=FAST_RETRIES)

    @worker.handle("nowhere")
    async def nowhere(job: dict[str, Any], ctx: JobContext) -> None:
        return None

    async def main() -> None:
        await worker.start()
        try:
            # No answer is worth retrying: the worker claims again and again, and is still running.
            await _eventually(lambda: claims() >= 5)
            assert worker.state == "running"
        finally:
            await worker.stop()

    with caplog.at_level("WARNING", logger="jobwire.worker"):
        asyncio.run(main())
    # Said once, not once a retry.
    [line] = _messages(caplog, "jobwire worker: ")
    assert line.startswith("jobwire worker: claim: ") and "claim: claim" not in line
    assert line.endswith("(http://127.0.0.1:9)")


def test_an_outage_that_goes_on_is_said_again_once_a_minute_with_its_count(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reminders' clock is the default log's, driven here: no test waits a minute."""
    claims = _count_claims(monkeypatch)
    now = 1_000.0
    worker = Worker("http://127.0.0.1:9", "jw_not_a_key_at_all", poll_wait=1, backoff=FAST_RETRIES)
    worker._error_log.clock = lambda: now
    worker.handle("nowhere", lambda job, ctx: None)

    async def more_claims() -> None:
        """Until a few more claims failed (so at least one more was reported) at the clock's time."""
        seen = claims()
        await _eventually(lambda: claims() >= seen + 3)

    async def main() -> None:
        nonlocal now
        await worker.start()
        try:
            await more_claims()
            now += 59.0
            await more_claims()
            assert _messages(caplog, "jobwire worker: still failing") == []
            now += 1.0
            await _eventually(lambda: len(_messages(caplog, "jobwire worker: still failing")) == 1)
            await more_claims()
            now += 60.0
            await _eventually(lambda: len(_messages(caplog, "jobwire worker: still failing")) == 2)
            await more_claims()
        finally:
            await worker.stop()

    with caplog.at_level("WARNING", logger="jobwire.worker"):
        asyncio.run(main())
    first, *reminders = _messages(caplog, "jobwire worker: ")
    assert first == "jobwire worker: claim: All connection attempts failed (http://127.0.0.1:9)"
    counts = []
    for reminder, seconds in zip(reminders, ("60.0", "120.0"), strict=True):
        said = re.fullmatch(rf"jobwire worker: still failing: (\d+) failed requests in the last {seconds} s: All connection attempts failed \(http://127\.0\.0\.1:9\)", reminder)
        assert said is not None, reminder
        counts.append(int(said.group(1)))
    # Every failed claim counted, none twice: more than the claims before each reminder, at most all of them.
    assert 6 <= counts[0] < counts[1] <= claims()


def test_an_outage_is_said_once_and_its_end_once_when_the_server_answers_again(tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real server on a port of its own: not there when the worker starts, then there; then gone
    while the worker is connected (stopped as a deploy stops it), and back on the same port."""
    gone = start_server("memory", tmp_path)
    stop_server(gone)
    port = gone.url.rsplit(":", 1)[1]
    claims = _count_claims(monkeypatch)
    now = 0.0
    worker = Worker(gone.url, gone.api_key, poll_wait=1, backoff=FAST_RETRIES)
    worker._error_log.clock = lambda: now
    worker.handle("again", lambda job, ctx: "done")
    servers: list[Server] = []

    def answers() -> list[str]:
        return _messages(caplog, "jobwire worker: the server answers again")

    async def main() -> None:
        nonlocal now
        await worker.start()
        try:
            await _eventually(lambda: claims() >= 5)
            now = 7.0
            servers.append(await asyncio.to_thread(start_server, "memory", tmp_path, "--port", port))
            await _eventually(lambda: len(answers()) == 1)
            async with AsyncBackend(gone.url, gone.api_key) as backend:
                job = await backend.create_job("again")
            assert (await until(servers[-1], job["id"], lambda state: state["status"] == "completed"))["result"] == "done"

            now = 10.0
            await asyncio.to_thread(stop_server, servers[-1])
            seen = claims()
            await _eventually(lambda: claims() >= seen + 5)
            now = 25.0
            servers.append(await asyncio.to_thread(start_server, "memory", tmp_path, "--port", port))
            await _eventually(lambda: len(answers()) == 2)
            assert worker.state == "running"
        finally:
            await worker.stop()
            for server in servers:
                stop_server(server)

    with caplog.at_level("WARNING", logger="jobwire.worker"):
        asyncio.run(main())
    lines = _messages(caplog, "jobwire worker: ")
    first_end = lines.index(answers()[0])
    # Not there yet: the claims all failed the same way, said once.
    assert lines[:first_end] == [f"jobwire worker: claim: All connection attempts failed ({gone.url})"]
    ended = re.fullmatch(r"jobwire worker: the server answers again \((\d+) failed requests over 7\.0 s\)", answers()[0])
    # At least the claims that failed before the server came: five were sent, so four had failed.
    assert ended is not None and int(ended.group(1)) >= 4, answers()[0]
    # Gone while connected: a claim may be refused by the server on its way out, or cut, before
    # the port refuses them all; each way is said once, whatever the count.
    failures, [end] = lines[first_end + 1 : -1], lines[-1:]
    assert failures and len(set(failures)) == len(failures), failures
    assert all(line.startswith("jobwire worker: claim: ") for line in failures), failures
    assert re.fullmatch(r"jobwire worker: the server answers again \((\d+) failed requests over 15\.0 s\)", end), end


async def _eventually(condition: Callable[[], bool]) -> None:
    """Returns once ``condition`` holds (polled; the GUARD is a hang guard, not a timing assertion)."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), GUARD)


def _messages(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith(prefix)]


def test_an_async_handler_reports_stages_items_text_and_its_result(server: Server) -> None:
    async def scenario() -> None:
        worker = Worker(server.url, server.api_key, name="py-test", poll_wait=2)

        @worker.handle("transcription")
        async def transcribe(job: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
            for stage in ("validating", "decoding", "transcribing"):
                ctx.progress(stage=stage, percent=0)
                for file in job["input"]["files"]:
                    ctx.item(file, label=file, status="running", percent=50)
                    ctx.item(file, status="completed", percent=100)
                ctx.progress(percent=100, message=f"{stage} done")
            ctx.chunk("hello ")
            ctx.chunk("world")
            return {"words": 2}

        await worker.start()
        try:
            async with AsyncBackend(server.url, server.api_key) as backend:
                job = await backend.create_job("transcription", input={"files": ["a.mp3", "b.mp3"]})
                final = await until(server, job["id"], lambda state: state["status"] == "completed")
                log = await backend.get_job(job["id"])
        finally:
            await worker.stop()
        assert final["result"] == {"words": 2} and final["worker"] == "py-test"
        assert [entry["stage"] for entry in final["stages"]] == ["validating", "decoding", "transcribing"]
        assert [(item["id"], item["status"], item["percent"]) for item in final["items"]] == [("a.mp3", "completed", 100), ("b.mp3", "completed", 100)]
        assert final["text"] == "hello world"
        assert final["progress"]["message"] == "transcribing done"
        # The watcher's folded state is the server's own.
        assert {**final, "queuePosition": None} == {**log, "queuePosition": None}

    run(scenario)


def test_a_sync_handler_runs_in_a_thread_and_checkpoints_block_until_durable(memory_server: Server) -> None:
    server = memory_server
    seen: dict[str, Any] = {}

    def convert(job: dict[str, Any], ctx: SyncJobContext) -> str:
        seen["thread"] = threading.current_thread().name
        ctx.progress(stage="converting", percent=10)
        ctx.checkpoint({"page": 1})
        # Durable means another client reads it at once.
        with Backend(server.url, server.api_key) as backend:
            seen["checkpoint"] = backend.get_job(job["id"])["checkpoint"]
        ctx.chunk("page 1\n")
        return "done"

    async def scenario() -> None:
        worker = Worker(server.url, server.api_key, poll_wait=2)
        worker.handle("convert", convert)
        final = await run_one(server, worker, "convert", lambda state: state["status"] == "completed")
        assert final["result"] == "done" and final["text"] == "page 1\n"
        assert seen["checkpoint"] == {"page": 1} and seen["thread"].startswith("jobwire-handler")

    run(scenario)


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_cancel_reaches_a_running_handler(server: Server, kind: str) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        reached: asyncio.Future[str] = loop.create_future()
        worker = Worker(server.url, server.api_key, poll_wait=2)

        async def waits_async(job: dict[str, Any], ctx: JobContext) -> None:
            ctx.progress(stage="waiting")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                loop.call_soon_threadsafe(reached.set_result, f"CancelledError/{ctx.abort_reason}")
                raise

        def waits_sync(job: dict[str, Any], ctx: SyncJobContext) -> None:
            ctx.progress(stage="waiting")
            ctx.cancel_event.wait(GUARD)
            loop.call_soon_threadsafe(reached.set_result, f"cancel_event/{ctx.abort_reason}")

        worker.handle("slow", waits_async if kind == "async" else waits_sync)
        await worker.start()
        try:
            async with AsyncBackend(server.url, server.api_key) as backend:
                job = await backend.create_job("slow")
                await until(server, job["id"], lambda state: state["progress"]["stage"] == "waiting")
                await backend.cancel_job(job["id"], reason="changed my mind")
                how = await asyncio.wait_for(reached, GUARD)
                final = await backend.get_job(job["id"])
        finally:
            await worker.stop()
        assert how == ("CancelledError/cancelled" if kind == "async" else "cancel_event/cancelled")
        assert final["status"] == "cancelled"

    run(scenario)


def test_runs_jobs_concurrently_claiming_several_at_once_where_the_server_allows(memory_server: Server) -> None:
    server = memory_server
    errors: list[tuple[str, str]] = []

    async def scenario() -> None:
        running = 0
        all_in = asyncio.Event()
        worker = Worker(server.url, server.api_key, concurrency=3, poll_wait=2, on_error=lambda error, operation, job_id: errors.append((operation, str(error))))

        @worker.handle("parallel")
        async def parallel(job: dict[str, Any], ctx: JobContext) -> int:
            nonlocal running
            running += 1
            if running >= 3:
                all_in.set()
            # The first three wait for each other: they can only finish if they run at once.
            await all_in.wait()
            return int(job["input"]["n"])

        async with AsyncBackend(server.url, server.api_key) as backend:
            jobs = [await backend.create_job("parallel", input={"n": n}) for n in range(6)]
            await worker.start()
            try:
                finals = [await until(server, job["id"], lambda state: state["status"] == "completed") for job in jobs]
            finally:
                await worker.stop()
        assert [final["result"] for final in finals] == list(range(6))

    run(scenario)
    # A server without `max` on claims is asked for one job at a time, without an error.
    assert errors == []


@dataclass
class _Gated:
    """A worker of one slot and ``prefetch`` more whose handler notes each job's ``n`` when it starts
    and ends, and holds it until ``gate`` is set; every failure it reports goes to ``errors``."""

    worker: Worker
    gate: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    started: list[int] = dataclasses.field(default_factory=list)
    ended: list[int] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


def _gated(server: Server, prefetch: int) -> _Gated:
    errors: list[str] = []
    gated = _Gated(Worker(server.url, server.api_key, concurrency=1, prefetch=prefetch, poll_wait=1, on_error=lambda error, operation, _job: errors.append(f"{operation}: {error}")), errors=errors)

    @gated.worker.handle("prefetched")
    async def in_turn(job: dict[str, Any], ctx: JobContext) -> int:
        gated.started.append(job["input"]["n"])
        await gated.gate.wait()
        gated.ended.append(job["input"]["n"])
        return int(job["input"]["n"])

    return gated


def test_prefetched_jobs_are_claimed_at_once_and_run_one_at_a_time_in_claim_order(server: Server) -> None:
    async def scenario() -> None:
        gated = _gated(server, prefetch=3)
        worker = gated.worker

        async with AsyncBackend(server.url, server.api_key) as backend:
            jobs = [await backend.create_job("prefetched", input={"n": n}) for n in range(4)]
            await worker.start()
            try:
                # All four claimed (started, under the worker's leases); one handler runs, three wait.
                for job in jobs:
                    await until(server, job["id"], lambda state: state["status"] == "running")
                await _eventually(lambda: bool(gated.started))
                assert gated.started == [0] and worker.active_jobs == 4
                gated.gate.set()
                finals = [await until(server, job["id"], lambda state: state["status"] == "completed") for job in jobs]
            finally:
                await worker.stop()
        assert [final["result"] for final in finals] == [0, 1, 2, 3]
        # One at a time: each ended before the next started.
        assert gated.started == gated.ended == [0, 1, 2, 3]
        assert gated.errors == []

    run(scenario)


def test_a_prefetched_job_cancelled_while_it_waits_never_runs_and_frees_its_place(server: Server) -> None:
    async def scenario() -> None:
        gated = _gated(server, prefetch=1)
        worker = gated.worker

        async with AsyncBackend(server.url, server.api_key) as backend:
            running, waiting = [await backend.create_job("prefetched", input={"n": n}) for n in range(2)]
            await worker.start()
            try:
                for job in (running, waiting):
                    await until(server, job["id"], lambda state: state["status"] == "running")
                await backend.cancel_job(waiting["id"], reason="not needed any more")
                await _eventually(lambda: worker.active_jobs == 1)
                # Its place is taken again while the first job still runs.
                later = await backend.create_job("prefetched", input={"n": 2})
                await until(server, later["id"], lambda state: state["status"] == "running")
                assert gated.started == [0]
                gated.gate.set()
                for job in (running, later):
                    await until(server, job["id"], lambda state: state["status"] == "completed")
                cancelled = await backend.get_job(waiting["id"])
            finally:
                await worker.stop()
        assert gated.started == [0, 2]
        assert cancelled["status"] == "cancelled"
        # Nothing was reported for it, and nothing went wrong.
        assert gated.errors == []

    run(scenario)


def test_stop_releases_prefetched_jobs_at_once_and_never_starts_them(server: Server) -> None:
    async def scenario() -> None:
        gated = _gated(server, prefetch=2)
        worker = gated.worker

        async with AsyncBackend(server.url, server.api_key) as backend:
            running, *waiting = [await backend.create_job("prefetched", input={"n": n}) for n in range(3)]
            await worker.start()
            try:
                for job in (running, *waiting):
                    await until(server, job["id"], lambda state: state["status"] == "running")
                stopping = asyncio.ensure_future(worker.stop(timeout=GUARD))
                # Back in the queue for another worker, without waiting for the handler that runs.
                for job in waiting:
                    await until(server, job["id"], lambda state: state["status"] == "queued")
                assert not stopping.done() and (await backend.get_job(running["id"]))["status"] == "running"
                gated.gate.set()
                await asyncio.wait_for(stopping, GUARD)
            finally:
                await worker.stop()
            finals = [await backend.get_job(job["id"]) for job in (running, *waiting)]
            async with httpx.AsyncClient(headers={"authorization": f"Bearer {server.api_key}"}) as http_client:
                logs = [(await http_client.get(f"{server.url}/v1/jobs/{job['id']}/events?after=0")).json()["events"] for job in waiting]
            released = [[event["data"] for event in log if event["type"] == "requeued"] for log in logs]
        assert gated.started == [0] and worker.state == "stopped"
        assert gated.errors == []
        assert [final["status"] for final in finals] == ["completed", "queued", "queued"]
        # No handler ran the waiting ones: their attempts do not count.
        assert [final["attempt"] for final in finals] == [1, 0, 0]
        assert all(data == [{"reason": "worker stopping", "attempt": 1, "retryAt": None, "counted": False}] for data in released), released

    run(scenario)


@pytest.mark.parametrize("prefetch", [-1, 1_001, 2.5, "2"])
def test_prefetch_out_of_range_is_refused(prefetch: Any) -> None:
    with pytest.raises(ValueError, match=f"prefetch must be an integer in 0–1000 \\(got {prefetch}\\)"):
        Worker("http://127.0.0.1:9", "key", prefetch=prefetch)
    assert Worker("http://127.0.0.1:9", "key", prefetch=1_000).prefetch == 1_000


def test_carries_finished_jobs_outcomes_in_its_next_claims(memory_server: Server) -> None:
    server = memory_server
    sent: list[tuple[str, dict[str, Any]]] = []
    errors: list[tuple[str, str]] = []

    async def scenario() -> None:
        worker = Worker(server.url, server.api_key, poll_wait=2, on_error=lambda error, operation, job_id: errors.append((operation, str(error))))

        @worker.handle("carried")
        async def carried(job: dict[str, Any], ctx: JobContext) -> int:
            return int(job["input"]["n"]) * 2

        async def record(request: httpx.Request) -> None:
            if request.url.path != "/v1/workers/signals":
                sent.append((request.url.path, json.loads(request.content or b"{}")))

        async with AsyncBackend(server.url, server.api_key) as backend:
            jobs = [await backend.create_job("carried", input={"n": n}) for n in range(3)]
            await worker.start()
            # Before the first claim goes out (the claim loop has not run yet).
            assert worker._env is not None
            # Claims go on a connection of their own (WorkerApi._claims).
            worker._env.api._client.event_hooks["request"].append(record)
            worker._env.api._claims.event_hooks["request"].append(record)
            try:
                finals = [await until(server, job["id"], lambda state: state["status"] == "completed") for job in jobs]
            finally:
                await worker.stop()
        assert [final["result"] for final in finals] == [0, 2, 4]
        # Each outcome went exactly once, and they rode the claims rather than requests of their own.
        written: list[str] = []
        for path, body in sent:
            if path == "/v1/workers/claim":
                written += [write["jobId"] for write in body.get("done", [])]
            elif path == "/v1/events":
                written += [write["jobId"] for write in body["writes"] if write["events"][-1]["type"] == "completed"]
            elif body["events"][-1]["type"] == "completed":
                written.append(path.split("/")[3])
        assert sorted(written) == sorted(job["id"] for job in jobs)
        assert any(body.get("done") for path, body in sent if path == "/v1/workers/claim")

    run(scenario)
    assert errors == []


def test_a_claim_refused_as_too_large_for_the_outcomes_it_carried_sends_them_on_their_own(tmp_path: Path) -> None:
    """The worker's limits above the server's body limit: four outcomes of ~6 KB together exceed it,
    each alone fits. Such a refusal is about what the claim carried, not about the worker."""
    server = start_server("memory", tmp_path, "--max-body-bytes", "16384")
    refused: list[int] = []
    errors: list[tuple[str, str]] = []

    async def scenario() -> None:
        worker = Worker(server.url, server.api_key, concurrency=4, poll_wait=2, on_error=lambda error, operation, job_id: errors.append((operation, str(error))))
        gate = asyncio.Event()

        @worker.handle("bulky")
        async def bulky(job: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
            await gate.wait()
            return {"index": job["input"]["n"], "padding": "x" * 6_000}

        async def record(response: httpx.Response) -> None:
            if response.status_code == 413:
                refused.append(response.status_code)

        async with AsyncBackend(server.url, server.api_key) as backend:
            jobs = [await backend.create_job("bulky", input={"n": n}) for n in range(4)]
            serving = asyncio.ensure_future(worker.serve(signals=False))
            while worker._env is None:
                await asyncio.sleep(0.01)
            worker._env.api._client.event_hooks["response"].append(record)
            worker._env.api._claims.event_hooks["response"].append(record)
            while worker.active_jobs < 4:
                await asyncio.sleep(0.01)
            gate.set()
            finals = [await until(server, job["id"], lambda state: state["status"] == "completed") for job in jobs]
            assert worker.state == "running"
            await worker.stop()
            await asyncio.wait_for(serving, GUARD)
        assert [final["result"]["index"] for final in finals] == [0, 1, 2, 3]

    try:
        run(scenario)
    finally:
        stop_server(server)
    assert refused
    assert errors == []


def test_a_timeout_reaches_the_handler_and_fails_the_job(memory_server: Server) -> None:
    server = memory_server

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        reached: asyncio.Future[str] = loop.create_future()
        worker = Worker(server.url, server.api_key, poll_wait=2)

        @worker.handle("hangs")
        async def hangs(job: dict[str, Any], ctx: JobContext) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                reached.set_result(str(ctx.abort_reason))
                raise

        await worker.start()
        try:
            async with AsyncBackend(server.url, server.api_key) as backend:
                job = await backend.create_job("hangs", timeout=500, timeoutRetryable=False)
                how = await asyncio.wait_for(reached, GUARD)
                final = await until(server, job["id"], lambda state: state["status"] == "failed")
        finally:
            await worker.stop()
        assert how == "timed_out"
        assert final["error"]["code"] == "timed_out"

    run(scenario)


def test_a_retryable_failure_is_retried_with_its_checkpoint_and_a_plain_one_fails(memory_server: Server) -> None:
    server = memory_server

    async def scenario() -> None:
        worker = Worker(server.url, server.api_key, poll_wait=2)

        @worker.handle("flaky")
        async def flaky(job: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
            if job["attempt"] == 1:
                await ctx.checkpoint({"done": ["a"]})
                raise RetryableError("upstream timed out", code="upstream_timeout")
            return {"resumedWith": ctx.checkpoint_data, "attempt": job["attempt"]}

        @worker.handle("broken")
        async def broken(job: dict[str, Any], ctx: JobContext) -> None:
            raise JobFailure("unsupported_codec", "b.mp3 uses a codec we cannot decode")

        await worker.start()
        try:
            async with AsyncBackend(server.url, server.api_key) as backend:
                flaky_job = await backend.create_job("flaky", max_attempts=3)
                broken_job = await backend.create_job("broken", max_attempts=3)
                done = await until(server, flaky_job["id"], lambda state: state["status"] == "completed")
                failed = await until(server, broken_job["id"], lambda state: state["status"] == "failed")
        finally:
            await worker.stop()
        assert done["result"] == {"resumedWith": {"done": ["a"]}, "attempt": 2}
        assert failed["error"] == {"code": "unsupported_codec", "message": "b.mp3 uses a codec we cannot decode", "retryable": False}
        assert failed["attempt"] == 1

    run(scenario)


def test_a_1000_chunk_stream_arrives_whole_and_in_order(server: Server) -> None:
    expected = "".join(f"{i:04d} " for i in range(1000))

    async def scenario() -> None:
        worker = Worker(server.url, server.api_key, poll_wait=2, throttle=0.01)

        @worker.handle("stream")
        async def stream(job: dict[str, Any], ctx: JobContext) -> None:
            for i in range(1000):
                ctx.chunk(f"{i:04d} ")
                if i % 10 == 9:
                    await asyncio.sleep(0)  # let batches go out while the handler writes

        async with AsyncBackend(server.url, server.api_key) as backend:
            job = await backend.create_job("stream")
        texts: list[str] = []
        seqs: list[int] = []
        final: JobState | None = None
        subscribed = asyncio.Event()

        async def follow() -> None:
            nonlocal final
            async for update in watch_job(server.url, job["id"], server.api_key):
                final = update.state
                subscribed.set()
                if update.event is not None:
                    seqs.append(update.event["seq"])
                    if update.event["type"] == "chunk":
                        texts.append(update.event["data"]["text"])

        # The watcher is subscribed before the job starts, so every chunk reaches it as an event.
        following = asyncio.ensure_future(asyncio.wait_for(follow(), GUARD))
        await asyncio.wait_for(subscribed.wait(), GUARD)
        await worker.start()
        try:
            await following
        finally:
            await worker.stop()
        assert final is not None and final["status"] == "completed"
        assert "".join(texts) == expected and final["text"] == expected
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    run(scenario)


def test_text_longer_than_an_event_is_split_to_fit_and_arrives_whole(memory_server: Server) -> None:
    server = memory_server
    # 3 bytes, 4 bytes, an escaped quote and newline: 150,000 characters, about 400 KB of JSON.
    long_text = "".join(("é🎉\"\n"[i % 4]) for i in range(150_000))

    async def scenario() -> None:
        worker = Worker(server.url, server.api_key, poll_wait=2)

        @worker.handle("long")
        async def long(job: dict[str, Any], ctx: JobContext) -> None:
            ctx.chunk(long_text)

        final = await run_one(server, worker, "long", lambda state: state["status"] in ("completed", "failed"))
        assert final["status"] == "completed", final["error"]
        assert final["text"] == long_text

    run(scenario)


def test_a_result_over_the_value_limit_fails_the_job_before_any_request(memory_server: Server) -> None:
    server = memory_server

    async def scenario() -> None:
        worker = Worker(server.url, server.api_key, poll_wait=2, limits=BatchLimits(max_value_bytes=1_000), on_error=lambda *_: None)

        @worker.handle("big")
        async def big(job: dict[str, Any], ctx: JobContext) -> str:
            with pytest.raises(ValueError, match="the limit is 1000"):
                await ctx.checkpoint("x" * 2_000)
            return "y" * 2_000

        final = await run_one(server, worker, "big", lambda state: state["status"] == "failed")
        assert final["error"]["code"] == "value_too_large" and "store it elsewhere" in final["error"]["message"]

    run(scenario)


def test_a_worker_killed_mid_job_is_resumed_from_its_checkpoint_by_another(server: Server) -> None:
    with Backend(server.url, server.api_key) as backend:
        job = backend.create_job("counter", input={"to": 8, "hangAfter": 3}, max_attempts=3)
    first = spawn_worker(server, "counter", "3000")
    try:
        wait_for_line(first, "hanging after 3")
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    second = spawn_worker(server, "counter")
    try:
        final = asyncio.run(until(server, job["id"], lambda state: state["status"] == "completed"))
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert final["result"] == {"resumedFrom": 3, "attempt": 2}
    # Counted once: 1–3 by the killed worker, 4–8 by the one that took over from its checkpoint.
    assert final["text"] == "1 2 3 4 5 6 7 8 "
    assert final["worker"] == "py-counter" and final["checkpoint"] == {"i": 8}


def _sigterm_when_working(server: Server, scenario: str, *again_after: str) -> tuple[int, str]:
    """A worker process of ``scenario``, sent SIGTERM once its handler prints "working", and again
    after each line of ``again_after``: its exit code and output."""
    process = spawn_worker(server, scenario)
    try:
        for line in ("working", *again_after):
            wait_for_line(process, line)
            process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=GUARD)[0]
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, rest


def _stopped_by_sigterm(server: Server, scenario: str, *again_after: str) -> tuple[str, dict[str, Any]]:
    """A job of ``scenario`` run by a worker process stopped by SIGTERM (see _sigterm_when_working):
    the process exits 0 saying it stopped; its output from the first signal on, and the job after."""
    with Backend(server.url, server.api_key) as backend:
        job = backend.create_job(scenario)
        code, rest = _sigterm_when_working(server, scenario, *again_after)
        assert code == 0, rest
        assert "stopped" in rest, rest
        return rest, backend.get_job(job["id"])


def test_sigterm_stops_gracefully_and_releases_the_lease_with_the_last_checkpoint(memory_server: Server) -> None:
    _, after = _stopped_by_sigterm(memory_server, "stubborn")
    # Released, not lost: back in the queue at once, with what the handler saved in its grace period.
    # Its handler ran, so the attempt counts.
    assert after["status"] == "queued" and after["attempt"] == 1
    assert after["checkpoint"] == {"step": 2, "stoppedBy": "SIGTERM"}


def test_sigterm_ends_the_process_even_when_a_plain_def_handler_never_returns(memory_server: Server) -> None:
    """A plain ``def`` handler deaf to its cancel (one long library call) ran in a pool thread that the
    interpreter joins at exit: run() returned and the process then waited for that call for ever."""
    rest, after = _stopped_by_sigterm(memory_server, "deaf")
    assert "1 handler still running after the stop" in rest, rest
    # Released at the stop: back in the queue for another worker.
    assert after["status"] == "queued"


def test_a_second_sigterm_during_the_stop_stops_now_and_still_releases_the_job(memory_server: Server) -> None:
    """The first signal waits for running jobs (here up to ten minutes) and says so; a second one (an
    impatient Ctrl-C) was ignored, so only a kill -9 ended the wait, leaving the job to its lease."""
    rest, after = _stopped_by_sigterm(memory_server, "slow", "jobwire worker: stopping: 1 running job may finish within 600 s (signal again to stop now)")
    assert "jobwire worker: stopping now" in rest, rest
    # Released, not left to its lease: back in the queue at once.
    assert after["status"] == "queued"


@dataclass(frozen=True)
class TenMinutes(Backoff):
    """Every retry waits ten minutes: a pause no stop may wait out."""

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        return 600.0


def test_stop_ends_the_signals_pause_of_a_worker_whose_server_is_gone(memory_server: Server) -> None:
    """With the server gone, the signals long-poll pauses for its backoff between failures; stop()
    waited for that pause to end (here ten minutes; up to ``Backoff.max``, 10 s by default) before it
    resolved. The pause ends with the stop now."""
    server = memory_server

    async def scenario() -> None:
        errors: list[str] = []
        worker = Worker(server.url, server.api_key, poll_wait=1, backoff=TenMinutes(), on_error=lambda _error, operation, _job: errors.append(operation))
        started = asyncio.Event()

        @worker.handle("stuck")
        async def stuck(job: Any, ctx: JobContext) -> None:
            started.set()
            await asyncio.sleep(3600)

        await worker.start()
        async with AsyncBackend(server.url, server.api_key) as backend:
            await backend.create_job("stuck")
        await asyncio.wait_for(started.wait(), GUARD)
        server.process.kill()
        server.process.wait()

        async def signals_failed() -> None:
            while "signals" not in errors:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(signals_failed(), GUARD)
        await asyncio.wait_for(worker.stop(timeout=0.5, grace=0.5), GUARD)
        assert worker.state == "stopped"

    asyncio.run(scenario())


async def _new_key(server: Server, role: str) -> dict[str, Any]:
    """A new API key of ``role`` (the admin's ``POST /v1/keys``): ``{"id", "key", …}``."""
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {server.api_key}"}) as http:
        answer = await http.post(f"{server.url}/v1/keys", json={"name": f"python {role} key", "role": role})
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created


def _count_claims(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Counts the claims the worker sends (to the real server)."""
    sent = 0
    send = httpx.AsyncClient.send

    async def counting(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        nonlocal sent
        if request.url.path == "/v1/workers/claim":
            sent += 1
        return await send(self, request, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", counting)
    return lambda: sent


def test_a_wrong_key_stops_the_worker_and_serve_raises_the_servers_error(memory_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 401 will never succeed: the worker used to retry it for ever, a warning per attempt."""
    server = memory_server
    claims = _count_claims(monkeypatch)
    errors: list[tuple[BaseException, str, str | None]] = []
    # No pause between retries: a worker that retried would claim again and again within the window below.
    worker = Worker(server.url, "jw_not_a_key_at_all", poll_wait=1, backoff=Backoff(0.0, 0.0), on_error=lambda *reported: errors.append(reported))
    worker.handle("refused", lambda job, ctx: None)

    async def scenario() -> None:
        serving = asyncio.ensure_future(worker.serve(signals=False))
        while not errors:
            await asyncio.sleep(0.01)
        # A window, not a speed: no claim follows the refused one, however long it is.
        await asyncio.sleep(0.3)
        assert claims() == 1
        with pytest.raises(WorkerRequestError) as raised:
            await asyncio.wait_for(serving, GUARD)
        error = raised.value
        assert (error.code, error.status, error.operation, error.transient) == ("unauthorized", 401, "claim", False)
        assert str(error) == "claim: A valid API key or token is required (Authorization: Bearer <credential>)"
        assert errors == [(error, "claim", None)]
        assert worker.state == "stopped"
        # stop() after it is a no-op that returns.
        await asyncio.wait_for(worker.stop(), GUARD)
        assert worker.state == "stopped" and claims() == 1

    asyncio.run(asyncio.wait_for(scenario(), GUARD))


def test_done_tells_a_worker_driven_by_start_and_stop_why_it_stopped(memory_server: Server) -> None:
    """serve() raises the refusal itself; an app that runs the worker with start() (in its own
    lifespan, say) had only on_error and state to learn of it."""
    server = memory_server

    async def scenario() -> None:
        refused = Worker(server.url, "jw_not_a_key_at_all", poll_wait=1, on_error=lambda *reported: None)
        refused.handle("refused", lambda job, ctx: None)
        await refused.done()  # never started: nothing to wait for
        await refused.start()
        with pytest.raises(WorkerRequestError) as raised:
            await asyncio.wait_for(refused.done(), GUARD)
        assert (raised.value.code, raised.value.status, refused.state) == ("unauthorized", 401, "stopped")
        # Asked again, after the stop: the same answer.
        with pytest.raises(WorkerRequestError):
            await refused.done()

        fine = Worker(server.url, server.api_key, poll_wait=1)
        fine.handle("fine", lambda job, ctx: None)
        await fine.start()
        waiting = asyncio.ensure_future(fine.done())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await fine.stop()
        await asyncio.wait_for(waiting, GUARD)

    asyncio.run(asyncio.wait_for(scenario(), GUARD))


def test_a_claim_refused_for_good_is_said_in_one_line_saying_the_worker_stopped(memory_server: Server, caplog: pytest.LogCaptureFixture) -> None:
    server = memory_server
    worker = Worker(server.url, "jw_not_a_key_at_all", poll_wait=1)
    worker.handle("refused", lambda job, ctx: None)
    with caplog.at_level("WARNING", logger="jobwire.worker"), pytest.raises(WorkerRequestError):
        asyncio.run(asyncio.wait_for(worker.serve(signals=False), GUARD))
    assert [record.getMessage() for record in caplog.records if record.name == "jobwire.worker"] == [
        "jobwire worker: claim: A valid API key or token is required (Authorization: Bearer <credential>) — the worker has stopped"
    ]


def test_a_url_that_is_no_jobwire_server_stops_the_worker_naming_it() -> None:
    """An HTTP server that is not Jobwire answers a POST 501 (Python's own http.server does): no outage
    a retry outlives. It was retried for ever as a 5xx, said only as ``HTTP 501``."""
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{other.server_address[1]}"
    try:
        worker = Worker(url, "any-key", poll_wait=1)
        worker.handle("elsewhere", lambda job, ctx: None)
        with pytest.raises(WorkerRequestError) as raised:
            asyncio.run(asyncio.wait_for(worker.serve(signals=False), GUARD))
    finally:
        other.shutdown()
        other.server_close()
    assert (raised.value.status, raised.value.transient) == (501, False)
    assert str(raised.value) == f"claim: HTTP 501 from {url}, without a Jobwire error: is it a Jobwire server?"


def test_a_key_that_may_not_claim_stops_the_worker_with_forbidden(memory_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server = memory_server
    claims = _count_claims(monkeypatch)
    errors: list[str] = []

    async def scenario() -> None:
        backend_key = await _new_key(server, "backend")
        worker = Worker(server.url, backend_key["key"], poll_wait=1, on_error=lambda _error, operation, _job: errors.append(operation))
        worker.handle("forbidden", lambda job, ctx: None)
        with pytest.raises(WorkerRequestError) as raised:
            await asyncio.wait_for(worker.serve(signals=False), GUARD)
        assert (raised.value.code, raised.value.status) == ("forbidden", 403)
        assert worker.state == "stopped"

    run(scenario)
    assert errors == ["claim"] and claims() == 1


def test_a_key_revoked_while_a_job_runs_aborts_its_handler_at_once_and_serve_raises(memory_server: Server) -> None:
    server = memory_server
    errors: list[str] = []

    async def scenario() -> None:
        worker_key = await _new_key(server, "worker")
        # A free slot keeps a claim going out while the job runs; a short poll brings the next one soon.
        worker = Worker(server.url, worker_key["key"], concurrency=2, poll_wait=1, on_error=lambda _error, operation, _job: errors.append(operation))
        running = asyncio.Event()
        aborted: list[str | None] = []

        @worker.handle("revoked")
        async def revoked(job: dict[str, Any], ctx: JobContext) -> None:
            running.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                aborted.append(ctx.abort_reason)
                raise

        serving = asyncio.ensure_future(worker.serve(signals=False))
        async with AsyncBackend(server.url, server.api_key) as backend, httpx.AsyncClient(headers={"authorization": f"Bearer {server.api_key}"}) as http:
            await backend.create_job("revoked")
            await asyncio.wait_for(running.wait(), GUARD)
            assert (await http.delete(f"{server.url}/v1/keys/{worker_key['id']}")).status_code == 200
        with pytest.raises(WorkerRequestError) as raised:
            await asyncio.wait_for(serving, GUARD)
        assert (raised.value.code, raised.value.status) == ("unauthorized", 401)
        assert aborted == ["stopped"]
        assert worker.state == "stopped" and worker.active_jobs == 0

    run(scenario)
    # The signals long-poll and the lease's release may be refused too; the claim is said once.
    assert errors.count("claim") == 1


def test_a_worker_process_with_a_wrong_key_exits_non_zero_with_the_servers_message(memory_server: Server) -> None:
    process = spawn_worker(dataclasses.replace(memory_server, api_key="jw_not_a_key_at_all"), "stubborn")
    try:
        output = process.communicate(timeout=GUARD)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, output
    assert "jobwire worker: claim: A valid API key or token is required (Authorization: Bearer <credential>) — the worker has stopped" in output
    assert "WorkerRequestError: claim: A valid API key or token is required" in output
    assert "stopped\n" not in output.splitlines(keepends=True)


Intercept = Callable[[str, bytes], tuple[int, dict[str, str], bytes] | None]


def _proxy(server: Server, intercept: Intercept) -> http.server.ThreadingHTTPServer:
    """An HTTP proxy in front of ``server``: ``intercept(path, body)`` answers a request itself
    (status, headers, body) or, with None, lets it through. Stop it with ``shutdown()``."""

    class Forward(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            own = intercept(self.path, body)
            if own is not None:
                status, own_headers, content = own
                self.send_response(status)
                for name, value in {"content-type": "application/json", **own_headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
                return
            headers = {name: value for name, value in self.headers.items() if name.lower() not in ("host", "content-length", "connection")}
            with httpx.Client(timeout=None) as upstream:
                answer = upstream.request(self.command, f"{server.url}{self.path}", content=body, headers=headers)
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = forward

        def log_message(self, format: str, *args: Any) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return proxy


def test_a_refused_heartbeat_is_retried_after_the_servers_retry_after_and_the_lease_kept(memory_server: Server) -> None:
    """A proxy in front of the server answers the first heartbeat as an overloaded node does (503,
    ``Retry-After: 1``): the worker's own backoff (from 0.1 s) asked again ten times sooner."""
    heartbeats: list[float] = []

    def refuse_first_heartbeat(path: str, _body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        if not path.endswith("/heartbeat"):
            return None
        heartbeats.append(time.monotonic())
        if len(heartbeats) > 1:
            return None
        refused = {"error": {"code": "overloaded", "message": "busy", "details": {"bytes": 1, "size": 1, "limit": 1, "retryAfter": 1}}}
        return 503, {"retry-after": "1"}, json.dumps(refused).encode()

    proxy = _proxy(memory_server, refuse_first_heartbeat)
    errors: list[tuple[str, str]] = []

    async def scenario() -> JobState:
        worker = Worker(f"http://127.0.0.1:{proxy.server_address[1]}", memory_server.api_key, lease_ms=9_000, poll_wait=2, on_error=lambda error, operation, _job: errors.append((operation, getattr(error, "code", ""))))

        @worker.handle("beats")
        async def beats(job: dict[str, Any], ctx: JobContext) -> str:
            while len(heartbeats) < 2:  # past the first heartbeat (at 3 s) and its retry (the lease lasts until 9 s)
                await asyncio.sleep(0.05)
            return "kept"

        await worker.start()
        try:
            async with AsyncBackend(memory_server.url, memory_server.api_key) as backend:
                job = await backend.create_job("beats")
                return await until(memory_server, job["id"], lambda state: state["status"] == "completed")
        finally:
            await worker.stop()

    try:
        final = asyncio.run(asyncio.wait_for(scenario(), GUARD))
    finally:
        proxy.shutdown()
    assert final["result"] == "kept" and final["attempt"] == 1
    assert heartbeats[1] - heartbeats[0] >= 1.0
    assert errors == [("heartbeat", "overloaded")]


def test_unrun_jobs_are_released_without_ran_to_a_server_that_refuses_the_field(memory_server: Server) -> None:
    """A server before ``ran`` refuses the unknown field (as a proxy in front of this one does here):
    the worker releases the jobs it never ran without it, and says nothing of the refusal."""
    releases: list[dict[str, Any]] = []

    def older_server(path: str, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        if not path.endswith("/release"):
            return None
        sent = json.loads(body)
        releases.append(sent)
        if "ran" not in sent:
            return None
        refused = {"error": {"code": "invalid_request", "message": "The request is invalid: ran: unknown field", "details": {"field": "ran", "reason": "ran: unknown field"}}}
        return 400, {}, json.dumps(refused).encode()

    proxy = _proxy(memory_server, older_server)
    proxied = dataclasses.replace(memory_server, url=f"http://127.0.0.1:{proxy.server_address[1]}")

    async def scenario() -> list[JobState]:
        gated = _gated(proxied, prefetch=2)
        async with AsyncBackend(memory_server.url, memory_server.api_key) as backend:
            jobs = [await backend.create_job("prefetched", input={"n": n}) for n in range(3)]
            await gated.worker.start()
            try:
                for job in jobs:
                    await until(memory_server, job["id"], lambda state: state["status"] == "running")
                stopping = asyncio.ensure_future(gated.worker.stop(timeout=GUARD))
                waiting = [await until(memory_server, job["id"], lambda state: state["status"] == "queued") for job in jobs[1:]]
                gated.gate.set()
                await asyncio.wait_for(stopping, GUARD)
            finally:
                await gated.worker.stop()
        assert gated.errors == []
        return waiting

    try:
        waiting = asyncio.run(asyncio.wait_for(scenario(), GUARD))
    finally:
        proxy.shutdown()
    # Back in the queue all the same, their attempts counted as that server counts them.
    assert [state["attempt"] for state in waiting] == [1, 1]
    assert len([body for body in releases if "ran" not in body]) == 2
    assert 1 <= len([body for body in releases if "ran" in body]) <= 2


def test_a_worker_stopped_just_as_a_job_is_created_never_strands_it(memory_server: Server) -> None:
    """stop() ends the waiting claim, and a job created at that moment can be claimed for the worker
    and answered before the node hears it go. The worker half-closes the claim's connection and reads
    on: the node gives the job back, or the worker reads the answer and does. Cancelled outright (as
    before), the answer was lost and the job stayed running under the stopped worker's lease (33 of
    40 such stops in a script)."""
    server = memory_server

    async def scenario() -> None:
        async with AsyncBackend(server.url, server.api_key) as backend, httpx.AsyncClient(headers={"authorization": f"Bearer {server.api_key}"}) as http_client:
            for round_ in range(12):
                kind = f"stop-race-{round_}"
                errors: list[str] = []
                worker = Worker(server.url, server.api_key, concurrency=1, lease_ms=60_000, poll_wait=5, on_error=lambda error, operation, _job: errors.append(f"{operation}: {error}"))

                @worker.handle(kind)
                async def quick(job: dict[str, Any], ctx: JobContext) -> str:
                    return "ok"

                await worker.start()
                await asyncio.sleep(0.1)
                created = asyncio.ensure_future(backend.create_job(kind))
                await asyncio.sleep((round_ % 3) / 1000)
                await worker.stop(timeout=2)
                job = await created
                state = await backend.get_job(job["id"])
                for _ in range(1500):  # 15 s at most: run, or back in the queue, not left under the lease
                    if state["status"] != "running":
                        break
                    await asyncio.sleep(0.01)
                    state = await backend.get_job(job["id"])
                assert state["status"] in ("completed", "queued"), (round_, state["status"])
                if state["status"] == "queued":
                    # Never claimed, or claimed and given back unrun: no attempt counted either way.
                    log = (await http_client.get(f"{server.url}/v1/jobs/{job['id']}/events?after=0")).json()["events"]
                    assert state["attempt"] == 0
                    assert all(event["data"].get("counted") is False for event in log if event["type"] == "requeued"), log
                assert errors == []

    asyncio.run(asyncio.wait_for(scenario(), GUARD))
