"""Stage plans, metadata and large values end to end, on servers that have them (a server without
stage plans refuses `stages` at create: these tests are skipped there, saying so)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import Server
from jobwire import AsyncBackend, Backend, InvalidRequestError, JobContext, RetryableError, Worker
from test_worker import GUARD, run_one, until

PLAN = [{"name": "validating", "from": 0, "to": 10}, {"name": "transcribing", "from": 10, "to": 90}, {"name": "aligning", "from": 90, "to": 100}]


def create_planned(server: Server) -> dict[str, Any]:
    with Backend(server.url, server.api_key) as backend:
        try:
            return backend.create_job("planned", input={"files": ["a.mp3", "b.mp3"]}, stages=PLAN)
        except InvalidRequestError as error:
            if (error.details or {}).get("field") == "stages":
                pytest.skip("this server has no stage plans (create refuses `stages`)")
            raise


def test_stage_fractions_and_metadata_become_the_plans_percent_and_the_jobs_metadata(server: Server) -> None:
    job = create_planned(server)
    seen: list[float] = []

    async def scenario() -> dict[str, Any]:
        worker = Worker(server.url, server.api_key, poll_wait=2)

        @worker.handle("planned")
        async def planned(claimed: dict[str, Any], ctx: JobContext) -> str:
            ctx.stage("validating", 1)
            ctx.stage("transcribing", 0)
            for index, file in enumerate(claimed["input"]["files"]):
                ctx.item(file, status="completed", metadata={"seconds": 10 + index})
                ctx.progress(fraction=(index + 1) / 2, metadata={"filesDone": index + 1})
                await ctx.flush()
            ctx.stage("aligning", 0.5)
            return "ok"

        await worker.start()
        try:
            async for update in _watch(server, job["id"]):
                if update["progress"]["percent"] is not None:
                    seen.append(update["progress"]["percent"])
                if update["status"] == "completed":
                    return update
        finally:
            await worker.stop()
        raise AssertionError("the watch ended before the job")

    final = asyncio.run(asyncio.wait_for(scenario(), GUARD))
    # validating done (10 %), transcribing half (50 %) then whole (90 %), aligning half (95 %), then 100.
    assert {10, 50, 90, 95} <= set(seen) and seen == sorted(seen)
    assert [(stage["name"], stage["status"]) for stage in final["plan"]] == [("validating", "done"), ("transcribing", "done"), ("aligning", "done")]
    assert final["progress"]["metadata"] == {"filesDone": 2}
    assert [item["metadata"] for item in final["items"]] == [{"seconds": 10}, {"seconds": 11}]


async def _watch(server: Server, job_id: str) -> Any:
    from jobwire import watch_job

    async for update in watch_job(server.url, job_id, server.api_key):
        yield update.state


def test_the_backend_reads_a_large_result_stored_apart(memory_server: Server) -> None:
    create_planned(memory_server)  # skips on a server without the app features
    big = {"rows": ["x" * 100] * 2_000}  # about 200 KB: above an event's 64 KiB

    async def scenario() -> Any:
        async with AsyncBackend(memory_server.url, memory_server.api_key) as backend:
            job = await backend.create_job("import", dispatch=False)
            await backend.report(job["id"], [{"type": "completed", "result": big}])
            state = await until(memory_server, job["id"], lambda state: state["status"] == "completed")
            return state, await backend.get_result(job["id"])

    state, result = asyncio.run(scenario())
    assert state["result"] is None and state["resultRef"]["size"] > 64 * 1024
    assert result == big


def test_a_large_checkpoint_is_stored_apart_and_fetched_for_the_next_attempt(memory_server: Server) -> None:
    server = memory_server
    create_planned(server)  # skips on a server without the app features
    large = {"seen": ["y" * 100] * 1_000}  # about 100 KB: above an event's 64 KiB

    async def scenario() -> dict[str, Any]:
        worker = Worker(server.url, server.api_key, poll_wait=2, on_error=lambda *_: None)

        @worker.handle("resumable")
        async def resumable(job: dict[str, Any], ctx: JobContext) -> Any:
            if job["attempt"] == 1:
                await ctx.checkpoint(large)
                raise RetryableError("try again")
            return {"resumedWith": len(ctx.checkpoint_data["seen"])}

        return await run_one(server, worker, "resumable", lambda state: state["status"] in ("completed", "failed"), max_attempts=2)

    final = asyncio.run(scenario())
    assert final["status"] == "completed", final["error"]
    assert final["result"] == {"resumedWith": 1_000} and final["checkpointRef"]["size"] > 64 * 1024
