"""One job's reports on their way to the server: the same throttling, coalescing and batching rules
as ``@jobwire/worker``'s outbox (packages/worker/src/outbox.ts)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from .._http import encode
from .._retry import Backoff, retry_delay
from .api import WorkerRequestError
from .errors import AbortReason, JobAborted


@dataclass(frozen=True)
class BatchLimits:
    """What one request may carry. The server's defaults are 1,000 events, 64 KiB per event, 1 MiB per body."""

    max_batch_events: int = 1_000
    """Events per batch."""
    max_event_bytes: int = 60_000
    """Bytes of one event's JSON; longer text is split into several chunks."""
    max_batch_bytes: int = 900_000
    """Bytes of all events' JSON in one batch."""
    max_value_bytes: int = 16 * 1024 * 1024
    """Bytes of a result's or a checkpoint's JSON (the server's ``--max-value-bytes``). One above
    ``max_event_bytes`` goes in a request of its own, and a server with large values stores it apart;
    a server without them refuses it (``event_too_large``)."""


@dataclass
class _Entry:
    event: dict[str, Any]
    size: int
    """Bytes of the event's JSON (chunks are measured when they are split)."""
    n: int
    """Position in the order of reports; delivered when ``delivered >= n``."""


_CHUNK_OVERHEAD = len(encode({"type": "chunk", "text": ""}))

Send = Callable[[int, list[dict[str, Any]]], Awaitable[Any]]


class Outbox:
    """Progress, item updates and text wait in a pending area and are sent at most once per
    ``throttle`` seconds (progress: latest wins; items: latest wins per id, fields merged; text:
    concatenated). A stage change, a checkpoint and the terminal event move everything pending into
    the queue and go at once, so no stage is skipped and nothing overtakes them. One batch is in
    flight at a time; a failed request is retried with the same batch number, so the server applies
    each batch once."""

    def __init__(
        self,
        *,
        throttle: float,
        stage: str | None,
        limits: BatchLimits,
        backoff: Backoff,
        send: Send,
        on_retry: Callable[[BaseException], None],
        on_end: Callable[[AbortReason, BaseException], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._throttle = throttle
        self._stage = stage
        self._limits = limits
        self._backoff = backoff
        self._send = send
        self._on_retry = on_retry
        self._on_end = on_end
        self._queue: list[_Entry] = []
        self._pending_progress: dict[str, Any] | None = None
        self._pending_items: dict[str, dict[str, Any]] = {}
        self._pending_text: list[str] = []
        self._throttle_timer: asyncio.TimerHandle | None = None
        self._last_flush_at = -math.inf
        self._batch_number = 0
        self._enqueued = 0
        self._delivered = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._draining: asyncio.Task[None] | None = None
        self._open = True
        self._replaced_once = False
        self._ended: JobAborted | None = None

    @property
    def accepting(self) -> bool:
        """Whether reports are still taken (false once closing, finishing or ended)."""
        return self._open and self._ended is None

    def progress(self, update: dict[str, Any]) -> None:
        if not self.accepting:
            return
        stage = update.get("stage")
        if stage is not None and stage != self._stage:
            # The previous stage's last progress goes first, then the new stage, undelayed.
            self._flush_pending()
            self._stage = stage
            self._enqueue({"type": "progress", **update})
            self._last_flush_at = self._loop.time()
            self._pump()
            return
        self._pending_progress = _merge(self._pending_progress or {}, update)
        self._schedule()

    def item(self, item_id: str, update: dict[str, Any]) -> None:
        if not self.accepting:
            return
        self._pending_items[item_id] = _merge(self._pending_items.get(item_id, {}), update)
        self._schedule()

    def chunk(self, text: str) -> None:
        if not self.accepting or text == "":
            return
        self._pending_text.append(text)
        self._schedule()

    def checkpoint(self, data: Any, size: int) -> asyncio.Future[None]:
        """Resolves once ``data`` (and everything reported before it) is durable on the server."""
        if not self.accepting:
            return self._refused()
        self._flush_pending()
        n = self._enqueue({"type": "checkpoint", "data": data}, size)
        self._pump()
        return self._until(n)

    def flush(self) -> asyncio.Future[None]:
        """Sends what is pending now; resolves once everything reported so far is durable."""
        if self._ended is not None:
            return self._refused()
        self._flush_pending()
        self._pump()
        return self._until(self._enqueued)

    async def finish(self, event: dict[str, Any]) -> None:
        """Sends what is pending, then ``event``, and takes no more reports; returns when done or ended."""
        if self.accepting:
            self._flush_pending()
            self._open = False
            self._enqueue(event)
        await self._idle()

    async def close(self) -> None:
        """Takes no more reports, sends what is pending; returns when done or ended."""
        if self.accepting:
            self._flush_pending()
            self._open = False
        await self._idle()

    def kill(self, reason: AbortReason) -> None:
        """Stops at once: drops what is not sent, abandons the request in flight, fails waiting checkpoints."""
        if self._ended is not None:
            return
        self._ended = JobAborted(reason)
        self._open = False
        if self._draining is not None:
            self._draining.cancel()
        self._cancel_timer()
        self._pending_progress = None
        self._pending_items.clear()
        self._pending_text.clear()
        self._queue.clear()
        self._reject_waiters(self._ended)

    async def _idle(self) -> None:
        while self._ended is None and (self._queue or self._draining is not None):
            task = self._pump()
            if task is not None:
                await asyncio.wait({task})

    def _refused(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        future.set_exception(self._ended or JobAborted("finished", "The job no longer takes reports"))
        return future

    def _until(self, n: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        if self._ended is not None:
            future.set_exception(self._ended)
        elif self._delivered >= n:
            future.set_result(None)
        else:
            self._waiters.append((n, future))
        # A handler that fires and forgets must not log "exception never retrieved" when the job is cancelled.
        future.add_done_callback(_retrieve)
        return future

    def _reject_waiters(self, error: BaseException) -> None:
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_exception(error)

    def _enqueue(self, event: dict[str, Any], size: int | None = None) -> int:
        self._enqueued += 1
        self._queue.append(_Entry(event, len(encode(event)) if size is None else size, self._enqueued))
        return self._enqueued

    def _cancel_timer(self) -> None:
        if self._throttle_timer is not None:
            self._throttle_timer.cancel()
            self._throttle_timer = None

    def _schedule(self) -> None:
        if self._throttle_timer is not None:
            return
        now = self._loop.time()
        due = self._last_flush_at + self._throttle
        if due <= now:
            self._flush_pending()
            self._pump()
            return
        # Throttled sends fall on a clock shared by every job of this worker (a grid of a quarter
        # of the throttle), so the reports of many running jobs come due together and go out in one
        # bulk request; it delays a send by at most a quarter of the throttle.
        grid = max(0.001, self._throttle / 4)
        wait = math.ceil(due / grid) * grid - now
        if wait <= 0:
            self._flush_pending()
            self._pump()
            return
        self._throttle_timer = self._loop.call_later(wait, self._timer_fired)

    def _timer_fired(self) -> None:
        self._throttle_timer = None
        self._flush_pending()
        self._pump()

    def _flush_pending(self) -> None:
        """Moves the pending progress, items and text into the queue."""
        self._cancel_timer()
        if self._pending_progress is None and not self._pending_items and not self._pending_text:
            return
        self._last_flush_at = self._loop.time()
        if self._pending_progress is not None:
            self._enqueue({"type": "progress", **self._pending_progress})
        for item_id, item in self._pending_items.items():
            self._enqueue({"type": "item", "id": item_id, **item})
        if self._pending_text:
            text = "".join(self._pending_text)
            last = self._queue[-1] if self._queue else None
            if last is not None and last.event["type"] == "chunk":
                last.event = {"type": "chunk", "text": last.event["text"] + text}
                self._enqueued += 1
                last.n = self._enqueued
            else:
                self._enqueue({"type": "chunk", "text": text}, 0)
        self._pending_progress = None
        self._pending_items.clear()
        self._pending_text.clear()

    def _pump(self) -> asyncio.Task[None] | None:
        if self._draining is None and self._queue and self._ended is None:
            task = self._loop.create_task(self._drain())
            self._draining = task

            def drained(finished: asyncio.Task[None]) -> None:
                if self._draining is finished:
                    self._draining = None
                if not finished.cancelled() and finished.exception() is not None:
                    error = finished.exception()
                    assert error is not None
                    self._end("rejected", error)
                # Something may have been queued between the loop's last check and now.
                if self._queue:
                    self._pump()

            task.add_done_callback(drained)
        return self._draining

    async def _drain(self) -> None:
        while self._queue and self._ended is None:
            events, last_n = self._take_batch()
            outcome = await self._deliver(self._batch_number + 1, events)
            if outcome is None:
                self._batch_number += 1
                self._delivered = last_n
                ready = [future for n, future in self._waiters if n <= last_n]
                self._waiters = [(n, future) for n, future in self._waiters if n > last_n]
                for future in ready:
                    if not future.done():
                        future.set_result(None)
                continue
            reason = _abort_reason_of(outcome)
            if reason != "rejected" or self._replaced_once:
                self._end(reason, outcome)
                return
            # A refused batch was not applied (batches are atomic), so its number is used again for
            # the `failed` that replaces everything: the job must not stay running with a hole in it.
            self._replaced_once = True
            self._open = False
            self._queue.clear()
            self._pending_progress = None
            self._pending_items.clear()
            self._pending_text.clear()
            self._reject_waiters(JobAborted("rejected", str(outcome)))
            self._enqueue({"type": "failed", "code": outcome.code[:100], "message": str(outcome)[:2_000], "retryable": False})
            self._on_end("rejected", outcome)

    def _end(self, reason: AbortReason, error: BaseException) -> None:
        if self._ended is not None:
            return
        self.kill(reason)
        self._on_end(reason, error)

    async def _deliver(self, batch: int, events: list[dict[str, Any]]) -> WorkerRequestError | None:
        """Sends one batch until it is applied (``None``) or refused for good; cancelled by ``kill``."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._send(batch, events)
                return None
            except WorkerRequestError as error:
                if not error.transient:
                    return error
                self._on_retry(error)
                await asyncio.sleep(retry_delay(self._backoff, attempt, error))

    def _take_batch(self) -> tuple[list[dict[str, Any]], int]:
        """The next batch within the limits, splitting long text. Of several checkpoints in one batch
        only the last is sent: the batch is applied atomically, so no one could observe the others."""
        limits = self._limits
        events: list[dict[str, Any]] = []
        size = 0
        last_n = self._delivered
        checkpoint_at = -1
        while len(events) < limits.max_batch_events and self._queue:
            entry = self._queue[0]
            if entry.event["type"] == "chunk":
                text: str = entry.event["text"]
                budget = min(limits.max_event_bytes, limits.max_batch_bytes - size) - _CHUNK_OVERHEAD
                # Rather than a sliver of text at the end of a full batch, start the next one.
                if events and budget < min(1_024, limits.max_event_bytes / 2):
                    break
                end, text_size = fit_text(text, budget)
                if end == 0:
                    if events:
                        break
                    raise ValueError(f"max_event_bytes {limits.max_event_bytes} cannot hold one character of text")
                events.append({"type": "chunk", "text": text[:end]})
                size += text_size + _CHUNK_OVERHEAD + 1
                if end < len(text):
                    entry.event = {"type": "chunk", "text": text[end:]}
                    continue
            else:
                if events and size + entry.size > limits.max_batch_bytes:
                    break
                if entry.event["type"] == "checkpoint":
                    if checkpoint_at != -1:
                        dropped = events.pop(checkpoint_at)
                        size -= len(encode(dropped)) + 1
                    checkpoint_at = len(events)
                events.append(entry.event)
                size += entry.size + 1
            self._queue.pop(0)
            last_n = entry.n
        return events, last_n


def _abort_reason_of(error: WorkerRequestError) -> AbortReason:
    """Where a final answer to a batch leaves the job."""
    if error.code in ("lease_lost", "job_not_found"):
        return "lease_lost"
    if error.code == "job_finished":
        return "cancelled" if (error.details or {}).get("status") == "cancelled" else "finished"
    return "rejected"


def _merge(into: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Latest value per field; metadata coalesces per key, as the server merges it (a ``None`` must reach it to remove a key)."""
    merged = {**into, **update}
    if "metadata" in into and "metadata" in update:
        merged["metadata"] = {**into["metadata"], **update["metadata"]}
    return merged


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def fit_text(text: str, budget: float) -> tuple[int, int]:
    """How much of ``text`` fits in ``budget`` bytes once JSON-encoded as UTF-8: (end index, encoded size)."""
    limit = int(budget)
    if limit <= 0:
        return 0, 0
    # Every character costs at least one byte, so no more than `limit` of them fit; the encoded
    # size grows with the prefix, so the longest prefix that fits is found by bisection (one
    # measure in the common case: plain text that fits, or ASCII cut at the budget).
    high = min(len(text), limit)
    size = _json_size(text[:high])
    if size <= limit:
        return high, size
    low, low_size = 0, 0
    while high - low > 1:
        middle = (low + high) // 2
        middle_size = _json_size(text[:middle])
        if middle_size <= limit:
            low, low_size = middle, middle_size
        else:
            high = middle
    return low, low_size


def _json_size(text: str) -> int:
    return len(encode(text)) - 2
