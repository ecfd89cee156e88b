"""The Python side of bench/python-worker.mjs: a jobwire Worker that writes `chunks` chunks per job of
type `chunks-python`, as fast as it can (yielding to the event loop every 100). Args: URL KEY CONCURRENCY."""

import asyncio
import sys

from jobwire import JobContext, Worker

url, api_key, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
worker = Worker(url, api_key, concurrency=concurrency, name="bench-python", poll_wait=5, on_error=lambda *_: None)


@worker.handle("chunks-python")
async def chunks(job: dict, ctx: JobContext) -> dict:
    count, text = job["input"]["chunks"], job["input"]["text"]
    for i in range(count):
        ctx.chunk(text)
        if i % 100 == 99:
            await asyncio.sleep(0)
    return {"chunks": count}


print("ready", flush=True)
worker.run(stop_timeout=1)
