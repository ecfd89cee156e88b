"""What a handler reports through: ``progress``, ``item``, ``chunk``, ``checkpoint``, and whether the job was cancelled."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable

from .._http import encode
from .errors import AbortReason, JobAborted
from .outbox import Outbox

ITEM_STATUSES = ("pending", "running", "completed", "failed", "skipped")
_MAX_STAGE = 200
_MAX_ITEM_ID = 200
_MAX_LABEL = 500
_MAX_MESSAGE = 2_000


class _Abort:
    """The abort state of one run, readable from the loop and from a handler's thread. Its events are
    made when first asked for: most runs never wait on one, and a ``threading.Event`` (a condition
    and its lock) was a tenth of a short job's cost in the worker."""

    def __init__(self) -> None:
        self.reason: AbortReason | None = None
        self._flag: threading.Event | None = None
        self._event: asyncio.Event | None = None
        # The flag may be made in a handler's thread while the loop aborts: one of them sets it.
        self._lock = threading.Lock()

    @property
    def flag(self) -> threading.Event:
        """Set once aborted; for a handler's thread."""
        with self._lock:
            if self._flag is None:
                self._flag = threading.Event()
                if self.reason is not None:
                    self._flag.set()
            return self._flag

    @property
    def event(self) -> asyncio.Event:
        """Set once aborted; for the worker's event loop only."""
        if self._event is None:
            self._event = asyncio.Event()
            if self.reason is not None:
                self._event.set()
        return self._event

    def set(self, reason: AbortReason) -> None:
        if self.reason is not None:
            return
        with self._lock:
            self.reason = reason
            flag = self._flag
        if flag is not None:
            flag.set()
        if self._event is not None:
            self._event.set()


class _Reports:
    """What both contexts share: the job, its abort state, and its reports, checked at the call (so
    the server never refuses a batch for them) and handed to the outbox on the worker's event loop."""

    def __init__(self, job: dict[str, Any], abort: _Abort, outbox: Outbox, max_value_bytes: int) -> None:
        self.job = job
        """The claimed job's state: ``job["input"]``, ``job["checkpoint"]`` (resume from it), ``job["attempt"]``…"""
        self._abort = abort
        self._outbox = outbox
        self._max_value_bytes = max_value_bytes
        progress = job.get("progress") or {}
        # Metadata as the server will hold it, so an update past the merged limits raises here, not in a refused batch.
        self._progress_metadata: dict[str, Any] | None = progress.get("metadata")
        self._item_metadata: dict[str, dict[str, Any] | None] = {item["id"]: item.get("metadata") for item in job.get("items") or []}
        self._stage: str | None = progress.get("stage")

    @property
    def id(self) -> str:
        job_id: str = self.job["id"]
        return job_id

    @property
    def input(self) -> Any:
        return self.job.get("input")

    @property
    def checkpoint_data(self) -> Any:
        """The last checkpoint a previous attempt saved (``None`` on a first run): resume from it."""
        return self.job.get("checkpoint")

    @property
    def cancelled(self) -> bool:
        """True once the job is no longer this handler's: cancelled, finished elsewhere, lease lost, or the worker stopping."""
        return self._abort.reason is not None

    @property
    def abort_reason(self) -> AbortReason | None:
        """Why the context aborted (see :data:`~jobwire.worker.errors.AbortReason`), or ``None``."""
        return self._abort.reason

    def raise_if_cancelled(self) -> None:
        """Raises :class:`JobAborted` once the context aborted: call it in loops."""
        if self._abort.reason is not None:
            raise JobAborted(self._abort.reason)

    def progress(
        self,
        *,
        stage: str | None = None,
        percent: float | None = None,
        message: str | None = None,
        fraction: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """The job's progress. Sent at most once per throttle (latest values win), but a new ``stage``
        is sent at once, after the previous stage's last update, so no stage is skipped. ``percent``
        is clamped to 0–100; ``message`` is cut at 2,000 characters; ``stage`` must be 1–200.
        ``fraction`` (0–1, clamped) is how far the stage is, for a job with a stage plan
        (``job["plan"]``): the server turns it into the overall percent. ``metadata`` is merged into
        the job's progress metadata (latest wins per key, ``None`` removes a key; at most 32 keys of
        1–100 characters and 4,096 bytes of JSON once merged, else ``ValueError``)."""
        clean = self._progress(stage, percent, message, fraction, metadata)
        if clean:
            self._hand(self._outbox.progress, clean)

    def stage(self, name: str, fraction: float = 0, metadata: dict[str, Any] | None = None) -> None:
        """The job is in ``name`` of its stage plan, ``fraction`` of the way through: ``progress(stage=name, fraction=fraction)``."""
        self.progress(stage=name, fraction=fraction, metadata=metadata)

    def item(
        self,
        item_id: str,
        *,
        label: str | None = None,
        status: str | None = None,
        percent: float | None = None,
        message: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Progress of one sub-task (a file, a page), merged into the item with this id (1–200
        characters); updates of one id coalesce, the latest value of each field wins; ``metadata``
        is merged per key within the same limits as ``progress``."""
        self._hand(self._outbox.item, item_id, self._item(item_id, label, status, percent, message, metadata))

    def chunk(self, text: str) -> None:
        """Appends streamed text. Never dropped or reordered; batched, and split when long."""
        if not isinstance(text, str):
            raise TypeError("chunk(): text must be a str")
        self._hand(self._outbox.chunk, text)

    def _hand(self, report: Callable[..., None], *args: Any) -> None:
        """Hands a checked report to the outbox, which lives on the worker's event loop."""
        raise NotImplementedError

    def _progress(self, stage: str | None, percent: float | None, message: str | None, fraction: float | None = None, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        if stage is not None:
            clean["stage"] = _identifier("progress(): stage", stage, _MAX_STAGE)
        if percent is not None:
            clean["percent"] = _percent("progress(): percent", percent)
        if message is not None:
            clean["message"] = _human("progress(): message", message, _MAX_MESSAGE)
        if fraction is not None:
            current = clean.get("stage", self._stage)
            plan = self.job.get("plan")
            if not any(entry.get("name") == current for entry in plan or []):
                where = "the job has no plan" if plan is None else f'"{current or ""}" is not in it'
                raise ValueError(f"progress(): fraction needs a stage of the job's plan; {where}")
            clean["fraction"] = min(1.0, max(0.0, _number("progress(): fraction", fraction)))
        if metadata is not None:
            merged = _checked_metadata("progress()", self._progress_metadata, metadata)
            clean["metadata"] = dict(metadata)
            self._progress_metadata = merged
        if "stage" in clean:
            self._stage = clean["stage"]
        return clean

    def _item(self, item_id: str, label: str | None, status: str | None, percent: float | None, message: str | None, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        _identifier("item(): id", item_id, _MAX_ITEM_ID)
        clean: dict[str, Any] = {}
        if label is not None:
            clean["label"] = _human("item(): label", label, _MAX_LABEL)
        if status is not None:
            if status not in ITEM_STATUSES:
                raise ValueError(f"item(): status must be one of {', '.join(ITEM_STATUSES)}")
            clean["status"] = status
        if percent is not None:
            clean["percent"] = _percent("item(): percent", percent)
        if message is not None:
            clean["message"] = _human("item(): message", message, _MAX_MESSAGE)
        if metadata is not None:
            self._item_metadata[item_id] = _checked_metadata("item()", self._item_metadata.get(item_id), metadata)
            clean["metadata"] = dict(metadata)
        return clean

    def _checkpoint_size(self, data: Any) -> int:
        size = len(encode({"type": "checkpoint", "data": data}))
        if size > self._max_value_bytes:
            raise ValueError(f"checkpoint(): {size} bytes of JSON; the limit is {self._max_value_bytes} (BatchLimits.max_value_bytes, the server's --max-value-bytes)")
        return size


class JobContext(_Reports):
    """The context of an ``async def`` handler. Reports are cheap to call often: they are coalesced
    and batched per job, sent in order, and retried without duplicates. When the job is cancelled
    (or lost, or the worker stops) the handler's task is cancelled (``asyncio.CancelledError``), and
    ``cancelled`` turns true; after that, reports are ignored and ``checkpoint()`` raises."""

    def _hand(self, report: Callable[..., None], *args: Any) -> None:
        report(*args)

    async def checkpoint(self, data: Any) -> None:
        """Saves where to resume from. Sent at once, after everything reported before it; returns once
        it is durable on the server. A retry or another worker gets it as ``ctx.checkpoint_data``."""
        await self._outbox.checkpoint(data, self._checkpoint_size(data))

    async def flush(self) -> None:
        """Sends what is pending now; returns once everything reported so far is durable."""
        await self._outbox.flush()

    async def wait_cancelled(self) -> AbortReason:
        """Waits until the context aborts; returns why."""
        await self._abort.event.wait()
        assert self._abort.reason is not None
        return self._abort.reason


class SyncJobContext(_Reports):
    """The context of a plain ``def`` handler, which runs in a thread of the worker: the same reports,
    handed to the worker's event loop; ``checkpoint()`` and ``flush()`` block until durable. Check
    ``cancelled`` (or call ``raise_if_cancelled()``) in loops, or wait on ``cancel_event``."""

    def __init__(self, job: dict[str, Any], abort: _Abort, outbox: Outbox, max_value_bytes: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(job, abort, outbox, max_value_bytes)
        self._loop = loop

    def _hand(self, report: Callable[..., None], *args: Any) -> None:
        self._loop.call_soon_threadsafe(report, *args)

    @property
    def cancel_event(self) -> threading.Event:
        """Set once the context aborts: ``ctx.cancel_event.wait(timeout)`` sleeps until then."""
        return self._abort.flag

    def checkpoint(self, data: Any) -> None:
        """Saves where to resume from; blocks until it is durable on the server (raises :class:`JobAborted` if the job ended)."""
        size = self._checkpoint_size(data)
        self._block(lambda: self._outbox.checkpoint(data, size))

    def flush(self) -> None:
        """Blocks until everything reported so far is durable."""
        self._block(self._outbox.flush)

    def _block(self, start: Callable[[], Awaitable[None]]) -> None:
        """Starts ``start`` on the worker's event loop and waits in this thread until it is done."""

        async def run() -> None:
            await start()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result()


def _identifier(what: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise ValueError(f"{what} must be a string of 1–{limit} characters")
    return value


def _human(what: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str")
    return value if len(value) <= limit else value[: limit - 1] + "…"


METADATA_LIMITS = {"max_keys": 32, "max_key_length": 100, "max_bytes": 4096}


def _metadata_problem(metadata: dict[str, Any]) -> str | None:
    if len(metadata) > METADATA_LIMITS["max_keys"]:
        return f"holds {len(metadata)} keys; at most {METADATA_LIMITS['max_keys']}"
    long = next((key for key in metadata if not 0 < len(key) <= METADATA_LIMITS["max_key_length"]), None)
    if long is not None:
        return f'key "{long[:40]}" must be 1–{METADATA_LIMITS["max_key_length"]} characters'
    size = len(encode(metadata))
    if size > METADATA_LIMITS["max_bytes"]:
        return f"is {size} bytes of JSON; at most {METADATA_LIMITS['max_bytes']}"
    return None


def _checked_metadata(what: str, current: dict[str, Any] | None, update: object) -> dict[str, Any]:
    """``update`` merged into ``current``, or ``ValueError`` when the update or the result breaks the limits."""
    if not isinstance(update, dict) or not all(isinstance(key, str) for key in update):
        raise TypeError(f"{what}: metadata must be a dict with str keys")
    own = _metadata_problem(update)
    if own is not None:
        raise ValueError(f"{what}: metadata {own}")
    merged = dict(current or {})
    for key, value in update.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    problem = _metadata_problem(merged)
    if problem is not None:
        raise ValueError(f"{what}: metadata merged into the job's {problem}")
    return merged


def _checked_number(what: str, value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise TypeError(f"{what} must be a number")
    return value


def _number(what: str, value: object) -> float:
    return float(_checked_number(what, value))


def _percent(what: str, value: object) -> float:
    return min(100, max(0, _checked_number(what, value)))
