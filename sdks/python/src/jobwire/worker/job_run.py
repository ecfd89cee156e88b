"""One claimed job from claim to its end, and the one signals long-poll all of a worker's jobs share."""

from __future__ import annotations

import asyncio
import inspect
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable, Literal

from .._http import encode, spawn
from .api import Claim, WorkerApi, WorkerRequestError
from .context import JobContext, SyncJobContext, _Abort
from .errors import AbortReason, JobAborted, failure_of
from .._retry import MIN_POLL, Backoff, retry_delay
from .outbox import BatchLimits, Outbox

Report = Callable[[BaseException, str, "str | None"], None]
# How long newly claimed jobs wait to be added to the signals long-poll (they are batched).
_RESTART_DELAY = 0.05


@dataclass
class RunEnvironment:
    api: WorkerApi
    watch: SignalWatch
    backoff: Backoff
    throttle: float
    lease_ms: int
    limits: BatchLimits
    executor: Executor
    cancel_tasks: bool
    report: Report


Phase = Literal["waiting", "running", "reporting", "stopping", "done"]
_SIGNAL_REASONS = frozenset({"cancelled", "finished", "lease_lost", "timed_out"})


class JobRun:
    """Holds the lease from the claim (heartbeats, signals), runs the handler once started, reports
    the outcome, reacts to cancel and lease loss, and on a forced stop releases the lease."""

    def __init__(self, claim: Claim, env: RunEnvironment) -> None:
        self.id: str = claim.job["id"]
        self.lease_token: str = claim.lease["token"]
        self._claim = claim
        self._env = env
        self._loop = asyncio.get_running_loop()
        # "waiting" from the claim until start(): held (heartbeats, signals) while it waits for a slot.
        self._phase: Phase = "waiting"
        self._started = False
        self._abort = _Abort()
        self._lost_lease = False
        self._handler_task: asyncio.Future[Any] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.finished: asyncio.Future[None] = self._loop.create_future()
        """Done when the job is no longer this worker's business: outcome delivered, lost, or released."""
        self.handler_settled: asyncio.Future[None] = self._loop.create_future()
        """Done when the handler has returned, or when one never started will not (dropped or released while it waited)."""
        self.outbox = Outbox(
            throttle=env.throttle,
            stage=(claim.job.get("progress") or {}).get("stage"),
            limits=env.limits,
            backoff=env.backoff,
            send=lambda batch, events: env.api.append_events(self.id, {"lease": self.lease_token, "batch": batch, "events": events}),
            on_retry=lambda error: env.report(error, "events", self.id),
            on_end=self._outbox_ended,
        )

    @property
    def waiting(self) -> bool:
        """Held, its handler not started yet; not dropped, not released."""
        return self._phase == "waiting"

    def hold(self) -> None:
        """From the claim on: the lease is heartbeated and the job watched for a cancel, started or not."""
        self._env.watch.add(self)
        self._heartbeat_task = self._loop.create_task(self._heartbeat())

    def start(self, handler: Callable[..., Any]) -> None:
        """Runs the handler of a waiting run."""
        assert self._phase == "waiting"
        self._phase = "running"
        self._started = True
        spawn(self._execute(handler))

    def signalled(self, reason: AbortReason, operation: str = "signals", error: BaseException | None = None) -> None:
        """The signal watch (or a heartbeat) says the job is no longer running under this lease."""
        self._lost_lease = True
        if reason == "lease_lost" and self._phase in ("waiting", "running", "stopping"):
            self._env.report(error or JobAborted(reason), operation, self.id)
        if self._phase == "waiting":
            # Dropped before its handler started: it never will, and nothing is reported for it.
            self._end()
        elif self._phase == "running":
            self._abort_handler(reason)
            self.outbox.kill(reason)
            self._end()
        elif self._phase == "stopping":
            self.outbox.kill(reason)

    async def interrupt(self, grace: float) -> None:
        """A forced stop: aborts the handler with ``stopped``, gives it ``grace`` seconds to settle (it
        may checkpoint meanwhile), sends what it reported, and releases the lease so the job is
        re-queued with its last checkpoint. A run still waiting is released at once."""
        if self._phase == "done":
            return
        deadline = self._loop.time() + grace
        # A run still waiting for a slot never ran: its attempt does not count.
        ran = self._phase != "waiting"
        try:
            if self._phase == "waiting":
                # Never started: no handler to settle, nothing reported to deliver.
                self._phase = "stopping"
            elif self._phase == "reporting":
                await asyncio.wait({self.finished}, timeout=grace)
                if self.finished.done():
                    return
                self.outbox.kill("stopped")
            else:
                self._phase = "stopping"
                self._abort_handler("stopped")
                await asyncio.wait({self.handler_settled}, timeout=max(0.0, deadline - self._loop.time()))
                closing = self._loop.create_task(self.outbox.close())
                await asyncio.wait({closing}, timeout=max(0.0, deadline - self._loop.time()))
                self.outbox.kill("stopped")
            self._env.watch.remove(self)
            if not self._lost_lease:
                await release_lease(self._env, self.id, self.lease_token, "worker stopping", max(grace, 1.0), ran=ran)
        finally:
            self._end()

    def _abort_handler(self, reason: AbortReason) -> None:
        self._abort.set(reason)
        task = self._handler_task
        if self._env.cancel_tasks and isinstance(task, asyncio.Task) and not task.done():
            task.cancel()

    async def _execute(self, handler: Callable[..., Any]) -> None:
        limits = self._env.limits
        terminal: dict[str, Any]
        try:
            await self._fetch_checkpoint()
            if inspect.iscoroutinefunction(handler):
                ctx: Any = JobContext(self._claim.job, self._abort, self.outbox, limits.max_value_bytes)
                self._handler_task = self._loop.create_task(handler(self._claim.job, ctx))
            else:
                ctx = SyncJobContext(self._claim.job, self._abort, self.outbox, limits.max_value_bytes, self._loop)
                self._handler_task = self._loop.run_in_executor(self._env.executor, handler, self._claim.job, ctx)
            await asyncio.wait({self._handler_task})
            if self._handler_task.cancelled():
                raise JobAborted(self._abort.reason or "stopped")
            error = self._handler_task.exception()
            if error is not None:
                raise error
            terminal = _completed_event(self._handler_task.result(), limits.max_value_bytes)
            if terminal["type"] == "failed":
                # Refused here, before any request: the server would refuse it after the upload.
                self._env.report(ValueError(terminal["message"]), "handler", self.id)
        except Exception as error:  # noqa: BLE001 — a handler's failure fails its job, whatever it is
            if self._abort.reason is None:
                self._env.report(error, "handler", self.id)
            terminal = {"type": "failed", **failure_of(error)}
        finally:
            self.handler_settled.set_result(None)
        # Cancelled, lost or stopping: the outcome is not reported (the job is already settled, or `interrupt` releases it).
        if self._phase != "running" or self._abort.reason is not None:
            return
        self._phase = "reporting"
        self._env.watch.remove(self)
        await self.outbox.finish(terminal)
        self._end()

    async def _fetch_checkpoint(self) -> None:
        """A checkpoint too large to come with the claim is stored apart (``checkpointRef``): fetched before the handler runs."""
        job = self._claim.job
        if job.get("checkpointRef") is None:
            return
        for attempt in range(1, 6):
            try:
                job["checkpoint"] = await self._env.api.checkpoint(self.id)
                return
            except WorkerRequestError as error:
                if not error.transient or attempt == 5 or self._abort.reason is not None:
                    raise
                await asyncio.sleep(retry_delay(self._env.backoff, attempt, error))

    def _outbox_ended(self, reason: AbortReason, error: BaseException) -> None:
        if reason not in ("cancelled", "finished"):
            self._env.report(error, "events", self.id)
        if reason != "rejected":
            self._lost_lease = True
        if self._phase != "running":
            return
        self._abort_handler(reason)
        self._env.watch.remove(self)
        if reason == "rejected":
            # The outbox still sends the `failed` that replaces what was refused.
            self._phase = "reporting"
            closing = spawn(self.outbox.close())
            closing.add_done_callback(lambda _: self._end())
        else:
            self._end()

    def _end(self) -> None:
        if self._phase == "done":
            return
        self._phase = "done"
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        self._env.watch.remove(self)
        if not self.finished.done():
            self.finished.set_result(None)
        if not self._started:
            # No handler will settle it: the worker frees the job's place now.
            self.handler_settled.set_result(None)

    async def _heartbeat(self) -> None:
        """Extends the lease every third of it; retries sooner (with backoff, or the server's
        ``Retry-After`` if longer, never later than the interval) after a failure."""
        env = self._env
        interval = max(0.001, self._claim.lease["leaseMs"] / 3000)
        failures = 0
        failure: WorkerRequestError | None = None
        while True:
            await asyncio.sleep(interval if failures == 0 else min(interval, retry_delay(env.backoff, failures, failure)))
            try:
                answer = await env.api.heartbeat(self.id, self.lease_token, env.lease_ms)
                failures = 0
                if answer.get("cancelled"):
                    self.signalled("cancelled")
                elif answer.get("timedOut") is True:
                    self.signalled("timed_out")
                elif answer.get("status") != "running":
                    self.signalled("finished")
            except WorkerRequestError as error:
                if not error.transient:
                    self.signalled("finished" if error.code == "job_finished" else "lease_lost", "heartbeat", error)
                    return
                failures += 1
                failure = error
                # While the outcome is being delivered the lease may go with it (a retryable failure re-queues the job).
                if self._phase != "reporting":
                    env.report(error, "heartbeat", self.id)


async def release_lease(env: RunEnvironment, job_id: str, token: str, reason: str, within: float, *, ran: bool) -> None:
    """Releases a lease, retrying transient failures for up to ``within`` seconds; never raises.
    ``ran=False``: no handler ran the job, so its attempt does not count."""
    deadline = time.monotonic() + within
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        try:
            await asyncio.wait_for(env.api.release(job_id, token, reason, ran), max(0.001, deadline - time.monotonic()))
            return
        except asyncio.TimeoutError:
            return
        except WorkerRequestError as error:
            # A lease that is gone or a job that ended needs no release.
            if not (not error.transient and error.code in ("lease_lost", "job_finished")):
                env.report(error, "release", job_id)
            if not error.transient:
                return
            await asyncio.sleep(min(retry_delay(env.backoff, attempt, error), max(0.0, deadline - time.monotonic())))


class SignalWatch:
    """One long-poll (``POST /v1/workers/signals``) for all the jobs this process runs, so a cancel
    reaches a handler within one round trip. A new job restarts the poll with the new set; nothing is
    lost by that, because the server answers at once for any listed job no longer running under its lease."""

    def __init__(self, api: WorkerApi, wait: float, backoff: Backoff, on_error: Callable[[BaseException], None]) -> None:
        self._api = api
        self._wait = wait
        self._backoff = backoff
        self._on_error = on_error
        self._watched: dict[str, JobRun] = {}
        self._request: tuple[asyncio.Task[list[dict[str, str]]], list[JobRun]] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._restart_queued = False
        self._closed = False
        # Set by close(): ends a pause between polls at once (stop() waited out a backoff of up to its max).
        self._closing = asyncio.Event()

    def add(self, run: JobRun) -> None:
        self._watched[run.id] = run
        if self._closed:
            return
        if self._loop_task is None:
            self._ensure_loop()
            return
        # Jobs claimed within a short window restart the poll once: a busy worker claiming many short
        # jobs does not pay a signals request per job, and a cancel still arrives within ~50 ms.
        if self._restart_queued:
            return
        self._restart_queued = True
        asyncio.get_running_loop().call_later(_RESTART_DELAY, self._restart)

    def remove(self, run: JobRun) -> None:
        """Stops reporting on ``run``. The poll in flight is not restarted: the server answers for it at once."""
        if self._watched.get(run.id) is run:
            del self._watched[run.id]

    async def close(self) -> None:
        self._closed = True
        self._closing.set()
        if self._request is not None:
            self._request[0].cancel()
        if self._loop_task is not None:
            await asyncio.wait({self._loop_task})

    def _restart(self) -> None:
        self._restart_queued = False
        request = self._request
        if request is not None and any(run not in request[1] for run in self._watched.values()):
            request[0].cancel()

    def _ensure_loop(self) -> None:
        if self._loop_task is not None or not self._watched or self._closed:
            return
        self._loop_task = spawn(self._run())

        def ended(_: asyncio.Task[None]) -> None:
            self._loop_task = None
            # A job may have been added after the loop saw an empty set, before it ended.
            self._ensure_loop()

        self._loop_task.add_done_callback(ended)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while self._watched and not self._closed:
            runs = list(self._watched.values())
            task = loop.create_task(self._api.signals([{"id": run.id, "lease": run.lease_token} for run in runs], self._wait))
            self._request = (task, runs)
            sent_at = loop.time()
            try:
                await asyncio.wait({task})
            finally:
                if self._request is not None and self._request[0] is task:
                    self._request = None
            if task.cancelled():
                continue
            error = task.exception()
            if error is not None:
                failures += 1
                self._on_error(error)
                await self._pause(retry_delay(self._backoff, failures, error))
                continue
            failures = 0
            signals = task.result()
            for signal in signals:
                # The same job may have been claimed again since (a retry): only the run that was asked about counts.
                run = next((one for one in runs if one.id == signal["jobId"]), None)
                if run is not None and self._watched.get(run.id) is run:
                    del self._watched[run.id]
                    reason: Any = signal["reason"]
                    # A reason this SDK does not know yet (a newer server): the job is not ours any more.
                    run.signalled(reason if reason in _SIGNAL_REASONS else "finished")
            # A server that does not hold the poll (a zero --poll-max-wait) must not be hammered.
            if not signals:
                await self._pause(MIN_POLL - (loop.time() - sent_at))

    async def _pause(self, seconds: float) -> None:
        """Waits ``seconds``, or less when the watch closes meanwhile."""
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except asyncio.TimeoutError:
            pass


def _completed_event(result: Any, max_value_bytes: int) -> dict[str, Any]:
    """The ``completed`` event for a handler's return value, or a ``failed`` when it cannot be sent."""
    if result is None:
        return {"type": "completed"}
    try:
        size = len(encode({"type": "completed", "result": result}))
    except (TypeError, ValueError) as error:
        return {"type": "failed", "code": "invalid_result", "message": f"The result is not JSON: {error}", "retryable": False}
    if size > max_value_bytes:
        message = f"The result is {size} bytes of JSON; the limit is {max_value_bytes} (the server's --max-value-bytes): store it elsewhere and return a reference to it"
        return {"type": "failed", "code": "value_too_large", "message": message, "retryable": False}
    return {"type": "completed", "result": result}
