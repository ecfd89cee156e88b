"""A Python worker process for bench/workers.mjs (`jobwire` from sdks/python). Args: URL KEY
CONCURRENCY PREFETCH TOTAL. Completes each `bench-trivial` job at once; writes one JSON line per
report on stdout, as the Node worker sends its IPC messages: `loaded` (modules loaded, before it
connects), `all-done` (TOTAL handled and none held: every completion answered), `stopped` (after
a `stop` line on stdin). Times are epoch ms and CPU µs of this process, both read here."""

import asyncio
import json
import sys
import time

from jobwire import Worker


def report(kind: str) -> None:
    print(json.dumps({"type": kind, "at": time.time() * 1000, "cpu": {"user": time.process_time() * 1e6, "system": 0}}), flush=True)


report("loaded")
url, api_key, concurrency, prefetch, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
worker = Worker(url, api_key, concurrency=concurrency, prefetch=prefetch, poll_wait=1, name="bench-python", on_error=lambda *_: None)
handled = 0


@worker.handle("bench-trivial")
async def trivial(job: dict, ctx: object) -> dict:
    global handled
    handled += 1
    return {"ok": True}


async def main() -> None:
    loop = asyncio.get_running_loop()
    await worker.start()
    while handled < total or worker.active_jobs > 0:
        await asyncio.sleep(0.001)
    report("all-done")
    # Until the bench says stop (a line on stdin), or closes it.
    await loop.run_in_executor(None, sys.stdin.readline)
    await worker.stop(timeout=1)
    report("stopped")


asyncio.run(main())
