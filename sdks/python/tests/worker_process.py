"""A worker in its own process, for the tests that kill or signal one: `worker_process.py URL KEY SCENARIO`.

Scenarios:
- ``counter``: counts to ``input.to``, one chunk and one checkpoint per step, resuming from the
  checkpoint. On attempt 1 it stops after ``input.hangAfter`` steps and hangs (the test kills it).
- ``stubborn``: checkpoints, then works until it is told to stop; on ``stopped`` it checkpoints
  where it got to (the test sends SIGTERM).
- ``slow``: an ``async`` handler that never ends by itself, in a worker whose stop waits ten
  minutes for running jobs (the test sends SIGTERM twice).
- ``deaf``: a plain ``def`` handler that never checks ``ctx.cancelled`` (one long library call);
  the test sends SIGTERM and the process must still exit.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

from jobwire import JobContext, SyncJobContext, Worker

url, api_key, scenario = sys.argv[1:4]
lease_ms = int(sys.argv[4]) if len(sys.argv) > 4 else 30_000
worker = Worker(url, api_key, name=f"py-{scenario}", lease_ms=lease_ms, poll_wait=2)


@worker.handle("counter")
async def counter(job: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    start = (ctx.checkpoint_data or {}).get("i", 0)
    target = job["input"]["to"]
    hang_after = job["input"].get("hangAfter")
    for i in range(start + 1, target + 1):
        ctx.item("count", label="Counting", percent=100 * i / target)
        ctx.chunk(f"{i} ")
        await ctx.checkpoint({"i": i})
        if job["attempt"] == 1 and hang_after is not None and i == hang_after:
            print(f"hanging after {i}", flush=True)
            await asyncio.Event().wait()
    return {"resumedFrom": start, "attempt": job["attempt"]}


@worker.handle("stubborn")
async def stubborn(job: dict[str, Any], ctx: JobContext) -> None:
    await ctx.checkpoint({"step": 1})
    print("working", flush=True)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if ctx.abort_reason == "stopped":
            # Within the stop's grace period: reports still go out before the lease is released.
            await ctx.checkpoint({"step": 2, "stoppedBy": "SIGTERM"})
        raise


@worker.handle("slow")
async def slow(job: dict[str, Any], ctx: JobContext) -> None:
    print("working", flush=True)
    await asyncio.Event().wait()


@worker.handle("deaf")
def deaf(job: dict[str, Any], ctx: SyncJobContext) -> None:
    print("working", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    print("ready", flush=True)
    # A deaf handler never settles: its grace is short (the stubborn one checkpoints within it).
    worker.run(stop_timeout=600 if scenario == "slow" else 0.2, grace=0.5 if scenario == "deaf" else 20)
    print("stopped", flush=True)
