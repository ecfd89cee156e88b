"""Splitting long text into events that fit the server's limits (no server needed for the measuring)."""

from __future__ import annotations

import json
import random

from jobwire.worker.outbox import fit_text


def json_size(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def test_fit_text_takes_the_longest_prefix_whose_json_fits_the_budget() -> None:
    rng = random.Random(18)
    alphabet = ['a', 'é', '"', '\\', '\n', '\x01', '€', '🎉', ' ']
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        budget = rng.randint(0, 120)
        end, size = fit_text(text, budget)
        assert size == json_size(text[:end]) and size <= budget
        # One more character would not fit.
        assert end == len(text) or json_size(text[: end + 1]) > budget


# The outbox's rules, with a `send` that records each batch in place of the HTTP request.

import asyncio  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from jobwire.worker.context import JobContext, _Abort  # noqa: E402
from jobwire.worker import Backoff  # noqa: E402
from jobwire.worker.outbox import BatchLimits, Outbox  # noqa: E402


def run_outbox(script: Any, job: dict[str, Any] | None = None, throttle: float = 3600.0) -> list[list[dict[str, Any]]]:
    """Runs ``script(ctx, outbox)`` and returns the batches sent, in order."""
    batches: list[list[dict[str, Any]]] = []

    async def scenario() -> None:
        async def send(batch: int, events: list[dict[str, Any]]) -> None:
            assert batch == len(batches) + 1  # numbered 1, 2, 3… with no gap
            batches.append(events)

        outbox = Outbox(throttle=throttle, stage=None, limits=BatchLimits(), backoff=Backoff(), send=send, on_retry=print, on_end=print)
        ctx = JobContext(job or {"id": "j", "progress": {"stage": None}, "items": []}, _Abort(), outbox, 60_000)
        await script(ctx, outbox)

    asyncio.run(scenario())
    return batches


def test_a_new_stage_goes_at_once_after_the_previous_stages_last_progress() -> None:
    async def script(ctx: JobContext, outbox: Outbox) -> None:
        ctx.progress(stage="decoding")  # the first report goes at once
        ctx.progress(percent=10)
        ctx.progress(percent=40, message="reading")  # throttled: latest wins
        ctx.progress(stage="transcribing")
        await ctx.flush()

    events = [event for batch in run_outbox(script) for event in batch]
    assert events == [
        {"type": "progress", "stage": "decoding"},
        {"type": "progress", "percent": 40, "message": "reading"},
        {"type": "progress", "stage": "transcribing"},
    ]


def test_item_updates_and_metadata_coalesce_per_field_and_key_and_text_concatenates() -> None:
    async def script(ctx: JobContext, outbox: Outbox) -> None:
        ctx.chunk("first ")  # goes at once, then the throttle holds the rest
        await ctx.flush()
        ctx.item("a.mp3", label="a.mp3", status="running", metadata={"frames": 1, "codec": "mp3"})
        ctx.item("a.mp3", percent=50, metadata={"frames": 2, "codec": None})
        ctx.chunk("one ")
        ctx.chunk("two")
        await ctx.checkpoint({"at": 2})

    batches = run_outbox(script)
    assert batches[1] == [
        {"type": "item", "id": "a.mp3", "label": "a.mp3", "status": "running", "percent": 50, "metadata": {"frames": 2, "codec": None}},
        {"type": "chunk", "text": "one two"},
        {"type": "checkpoint", "data": {"at": 2}},
    ]


def test_fraction_needs_a_stage_of_the_jobs_plan_and_metadata_keeps_its_limits() -> None:
    planned = {"id": "j", "progress": {"stage": None}, "items": [], "plan": [{"name": "decoding", "from": 0, "to": 50, "status": "pending", "fraction": None}]}

    async def script(ctx: JobContext, outbox: Outbox) -> None:
        with pytest.raises(ValueError, match="not in it"):
            ctx.progress(stage="mixing", fraction=0.5)
        ctx.stage("decoding", 1.5)  # clamped to 1
        with pytest.raises(ValueError, match="at most 32"):
            ctx.progress(metadata={f"k{i}": i for i in range(33)})
        ctx.progress(metadata={f"k{i}": i for i in range(20)})
        with pytest.raises(ValueError, match="merged into the job's holds 40 keys"):
            ctx.progress(metadata={f"x{i}": i for i in range(20)})
        await ctx.flush()

    events = [event for batch in run_outbox(script, planned) for event in batch]
    assert events[0] == {"type": "progress", "stage": "decoding", "fraction": 1.0}

    async def unplanned(ctx: JobContext, outbox: Outbox) -> None:
        with pytest.raises(ValueError, match="the job has no plan"):
            ctx.progress(fraction=0.5)

    assert run_outbox(unplanned) == []


def test_a_retry_waits_at_least_what_the_server_asked_for_and_at_most_a_minute() -> None:
    """An overloaded node answers ``503 overloaded`` with ``Retry-After: 1`` (``details["retryAfter"]``):
    the worker's own backoff (here 50 ms) would ask again twenty times sooner."""
    from jobwire._retry import retry_delay
    from jobwire.errors import JobwireError
    from jobwire.worker.api import WorkerRequestError

    def refused(code: str, status: int, retry_after: float) -> WorkerRequestError:
        return WorkerRequestError("events", JobwireError(code, details={"retryAfter": retry_after}, status=status))

    class Half(Backoff):
        def delay(self, attempt: int, rand: Any = None) -> float:
            return super().delay(attempt, lambda: 0.5)

    backoff = Half(0.1, 10.0)
    assert retry_delay(backoff, 1, None) == pytest.approx(0.05)
    assert retry_delay(backoff, 1, refused("overloaded", 503, 1)) == pytest.approx(1.0)
    assert retry_delay(backoff, 1, refused("rate_limited", 429, 3600)) == pytest.approx(60.0)
    # Its own backoff, when longer, still wins.
    assert retry_delay(backoff, 10, refused("overloaded", 503, 1)) == pytest.approx(5.0)

    # The outbox passes what refused the batch: the same batch goes again only after the asked-for wait.
    sent_at: list[float] = []

    async def scenario() -> None:
        async def send(batch: int, events: list[dict[str, Any]]) -> None:
            sent_at.append(asyncio.get_running_loop().time())
            if len(sent_at) == 1:
                raise refused("overloaded", 503, 0.3)

        outbox = Outbox(throttle=0.0, stage=None, limits=BatchLimits(), backoff=Backoff(0.001, 0.001), send=send, on_retry=lambda _error: None, on_end=print)
        outbox.chunk("abc")
        await outbox.flush()

    asyncio.run(scenario())
    assert len(sent_at) == 2
    assert sent_at[1] - sent_at[0] >= 0.3
