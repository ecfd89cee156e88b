"""The Python SDK's cost per client, run by bench/python-clients.mjs (which starts the server):
`python bench/python-clients.py URL API_KEY CALLS WATCHES`. Prints a Markdown table.

- A backend made per request (`with Backend(url, key) as jobwire:` in a web handler): latency and
  CPU of one create, the SDK as it is against a fresh default `httpx.Client` per Backend (what the
  SDK made before its clients shared one TLS setup) and one Backend for every call (the limit).
- WATCHES jobs watched at once with `watch_job` until each has its snapshot: the SDK as it is (a
  client per watch), a fresh default `httpx.AsyncClient` per watch (before), and one shared client
  with room for every stream. Failed attempts (logged on `jobwire.watch`, silenced here) are counted.
- A long stream of text: one job of CHUNKS chunks of 10 characters (written beforehand, 100 per
  request), followed from its first event (`after=0`: every event replayed) over SSE and over
  long-polling to the end: the SDK as it is (an update's state built when read; read once, at the
  end), and a loop that reads `update.state` at every update, which builds the whole text each time.
  (The SDK before could not start from a seq at all; folding the same chunks into its states took
  6.4 s for 50,000 and 31 s for 100,000, against 0.36 and 0.77 s now: docs/benchmarks.md.)
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable, ContextManager

import httpx

from jobwire import AsyncBackend, Backend, watch_job

url, api_key = sys.argv[1], sys.argv[2]


class Count(logging.Handler):
    """Counts the watches' failed attempts instead of printing a line for each."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.failed += 1


failures = Count()
logging.getLogger("jobwire.watch").addHandler(failures)
logging.getLogger("jobwire.watch").propagate = False
CALLS, WATCHES, CHUNKS = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])


def creates(open_backend: Callable[[], ContextManager[Backend]]) -> dict[str, float]:
    latencies: list[float] = []
    cpu = time.process_time()
    for _ in range(CALLS):
        started = time.perf_counter()
        with open_backend() as jobwire:
            jobwire.create_job("bench-python", dispatch=False)
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return {"p50": latencies[len(latencies) // 2], "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)], "cpu": (time.process_time() - cpu) * 1000 / CALLS}


async def watches(client_for: Callable[[], httpx.AsyncClient | None]) -> dict[str, float]:
    async with AsyncBackend(url, api_key) as backend:
        jobs = [await backend.create_job("bench-python", dispatch=False) for _ in range(WATCHES)]
    clients: list[httpx.AsyncClient] = []
    seen = 0
    all_seen = asyncio.Event()

    async def watch(job_id: str) -> None:
        nonlocal seen
        client = client_for()
        if client is not None:
            clients.append(client)
        async for _ in watch_job(url, job_id, api_key, client=client):
            seen += 1
            if seen == WATCHES:
                all_seen.set()
            await asyncio.Event().wait()  # holds the stream, as a watch of a running job does

    failures.failed = 0
    cpu = time.process_time()
    started = time.perf_counter()
    tasks = [asyncio.create_task(watch(job["id"])) for job in jobs]
    try:
        await asyncio.wait_for(all_seen.wait(), 120)
        wall, used = time.perf_counter() - started, time.process_time() - cpu
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in set(clients):
            await client.aclose()
    return {"wall": wall, "cpu": used, "failed": failures.failed}


async def long_text(transport: str, read_every_state: bool) -> dict[str, float]:
    async with AsyncBackend(url, api_key) as backend:
        job = await backend.create_job("bench-python", dispatch=False)
        for first in range(0, CHUNKS, 100):
            await backend.report(job["id"], [{"type": "chunk", "text": f"{i % 1_000_000:09d} "} for i in range(first, min(CHUNKS, first + 100))])
        await backend.report(job["id"], [{"type": "completed"}])
    cpu = time.process_time()
    started = time.perf_counter()
    updates = 0
    last = None
    async for update in watch_job(url, job["id"], api_key, after=0, transport=transport, poll_wait=5):  # type: ignore[arg-type]
        updates += 1
        last = update
        if read_every_state:
            update.state["status"]
    assert last is not None and len(last.state["text"]) == CHUNKS * 10, "the whole text arrived"
    return {"wall": time.perf_counter() - started, "cpu": time.process_time() - cpu, "updates": updates}


def main() -> None:
    one = Backend(url, api_key)
    rows: list[tuple[str, dict[str, float]]] = [
        ("SDK: a Backend per request", creates(lambda: Backend(url, api_key))),
        ("a Backend per request, each with a fresh default httpx.Client (the SDK before)", creates(lambda: Backend(url, api_key, client=httpx.Client(timeout=30.0)))),
        ("one Backend for every request (the limit)", creates(lambda: nullcontext(one))),
    ]
    one.close()
    limit = rows[2][1]["cpu"]
    print(f"\n### Python SDK: a backend per request ({CALLS:,} creates each, memory store)\n")
    print("| how | p50 ms | p99 ms | CPU ms per create | CPU vs the limit |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows:
        print(f"| {name} | {row['p50']:.2f} | {row['p99']:.2f} | {row['cpu']:.2f} | {row['cpu'] / limit:.1f}× |")

    shared = httpx.AsyncClient(limits=httpx.Limits(max_connections=None), timeout=httpx.Timeout(30.0, read=None))
    fresh: Callable[[], httpx.AsyncClient | None] = lambda: httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None))  # noqa: E731
    watched: list[tuple[str, dict[str, Any]]] = [
        ("SDK: watch_job, a client per watch", asyncio.run(watches(lambda: None))),
        ("watch_job, each with a fresh default httpx.AsyncClient (the SDK before)", asyncio.run(watches(fresh))),
        ("watch_job, one shared client with room for every stream", asyncio.run(watches(lambda: shared))),
    ]
    print(f"\n### Python SDK: {WATCHES:,} jobs watched at once, until each has its snapshot\n")
    print("| how | seconds | CPU seconds | CPU vs the SDK | failed attempts (retried) |")
    print("|---|---:|---:|---:|---:|")
    for name, row in watched:
        print(f"| {name} | {row['wall']:.2f} | {row['cpu']:.2f} | {row['cpu'] / watched[0][1]['cpu']:.1f}× | {row['failed']:,} |")

    streamed: list[tuple[str, dict[str, float]]] = []
    for transport in ("sse", "poll"):
        streamed.append((f"SDK: watch_job over {transport}, the state read at the end", asyncio.run(long_text(transport, False))))
        streamed.append((f"watch_job over {transport}, update.state read at every update", asyncio.run(long_text(transport, True))))
    print(f"\n### Python SDK: one job's {CHUNKS:,} chunks of 10 characters followed from its first event\n")
    print("| how | updates | seconds | CPU seconds | CPU µs per update | CPU vs the SDK |")
    print("|---|---:|---:|---:|---:|---:|")
    for index, (name, row) in enumerate(streamed):
        sdk = streamed[index - index % 2][1]["cpu"]
        print(f"| {name} | {row['updates']:,} | {row['wall']:.2f} | {row['cpu']:.2f} | {row['cpu'] * 1e6 / row['updates']:.0f} | {row['cpu'] / sdk:.1f}× |")


main()
