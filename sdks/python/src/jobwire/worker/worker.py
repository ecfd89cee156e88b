"""The worker loop: claims jobs of the types it handles while a slot is free, runs their handlers,
streams their reports, and stops gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
from typing import Any, Awaitable, Callable, Literal, TypeGuard, TypeVar, Union, overload

from .api import Claim, WorkerApi, WorkerRequestError
from .error_log import ErrorLog
from .errors import JobFailure
from .handler_threads import HandlerThreads
from .job_run import JobRun, RunEnvironment, SignalWatch, release_lease
from .._retry import MIN_POLL, Backoff, retry_delay
from .outbox import BatchLimits

Handler = Callable[[dict[str, Any], Any], Union[Any, Awaitable[Any]]]
"""``def handler(job, ctx)`` or ``async def handler(job, ctx)``: the return value becomes the job's
``result``; a raise fails the job (see :class:`JobFailure` and :class:`RetryableError`)."""

H = TypeVar("H", bound=Handler)
WorkerState = Literal["idle", "running", "stopping", "stopped"]
ErrorCallback = Callable[[BaseException, str, "str | None"], None]

_log = logging.getLogger("jobwire.worker")
# Most jobs one claim may take (the server's limit on `max`).
_MAX_CLAIM = 1_000
# How long stop() waits for a half-closed claim's answer (or the node's close) before it cancels the claim.
_GENTLE_STOP = 5.0


class Worker:
    """Claims jobs of the types it handles (one long-poll claim at a time, several jobs per claim when
    the server supports it), runs their handlers and streams their reports to the server. The
    outcomes of jobs that finish ride the next claim, so a busy worker sends one request per cycle.

    >>> worker = Worker("http://127.0.0.1:7070", api_key, concurrency=4)
    >>> @worker.handle("transcription")
    ... async def transcribe(job, ctx):
    ...     ctx.progress(stage="decoding", percent=12)
    ...     return {"words": 1200}
    >>> worker.run()  # until SIGTERM / SIGINT

    Options (defaults): ``name`` (``<hostname>:<pid>``, shown in each job's ``started`` event),
    ``concurrency`` (1 job at once), ``prefetch`` (0 jobs claimed ahead of a free slot, 0–1000),
    ``lease_ms`` (30,000; heartbeats go every third of it),
    ``throttle`` (0.1 s between two sends of a job's progress, items and text), ``poll_wait``
    (20 s a claim and a signals long-poll wait on the server, 1–30), ``limits`` (:class:`BatchLimits`,
    lower them to match a server started with lower ``--max-*``), ``bulk_writes`` (True: reports of
    several jobs due together share one ``POST /v1/events``), ``cancel_tasks`` (True: an ``async``
    handler's task is cancelled when its job is), ``on_error`` (called with ``(error, operation,
    job_id)`` for every failure the worker handles itself; default a log warning, once per outage
    for the failures a retry may outlive).

    With ``prefetch``, up to ``concurrency + prefetch`` jobs are held: the ones without a slot wait
    in the worker, under their lease (heartbeated, and dropped when cancelled meanwhile), and start
    in claim order as slots free. One claim then takes many short jobs at once; for long jobs leave
    it 0: a job waiting behind a long one might have run on another worker meanwhile.

    A claim the server refuses for good (a :class:`WorkerRequestError` that is not ``transient``: a
    wrong or revoked key, 401; a key that may not claim, 403; a URL that is no Jobwire server, 404)
    stops the worker: ``on_error`` is told once, running handlers are aborted at once (``stopped``)
    and their leases released where the server still allows it, and :meth:`serve` (so :meth:`run`)
    raises that error.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        name: str | None = None,
        concurrency: int = 1,
        prefetch: int = 0,
        lease_ms: int = 30_000,
        throttle: float = 0.1,
        poll_wait: float = 20,
        limits: BatchLimits | None = None,
        bulk_writes: bool = True,
        cancel_tasks: bool = True,
        backoff: Backoff | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer (got {concurrency})")
        if not isinstance(prefetch, int) or not 0 <= prefetch <= _MAX_CLAIM:
            raise ValueError(f"prefetch must be an integer in 0–{_MAX_CLAIM} (got {prefetch})")
        if not 1_000 <= lease_ms <= 600_000:
            raise ValueError(f"lease_ms must be in 1000–600000 (got {lease_ms})")
        if not 1 <= poll_wait <= 30:
            raise ValueError(f"poll_wait must be in 1–30 seconds (got {poll_wait})")
        if throttle < 0:
            raise ValueError(f"throttle must be >= 0 seconds (got {throttle})")
        self.url = url
        self.api_key = api_key
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.lease_ms = lease_ms
        self.throttle = throttle
        self.poll_wait = poll_wait
        self.limits = limits or BatchLimits()
        self.bulk_writes = bulk_writes
        self.cancel_tasks = cancel_tasks
        self.backoff = backoff or Backoff()
        # The default on_error, and told of every answer from the server (an outage is over).
        self._error_log = ErrorLog()
        self._on_error = on_error or self._error_log
        self._handlers: dict[str, Handler] = {}
        self._runs: set[JobRun] = set()
        # Prefetched runs waiting for a slot, in claim order, with the handler each will run.
        self._waiting: dict[JobRun, Handler] = {}
        self._state: WorkerState = "idle"
        self._env: RunEnvironment | None = None
        self._claim_task: asyncio.Task[tuple[list[Claim], bool]] | None = None
        # Runs whose handler has not returned yet, waiting ones included: the jobs held.
        self._handling = 0
        self._claiming: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopped: asyncio.Task[None] | None = None
        self._threads = HandlerThreads("jobwire-handler")
        # Set by a second SIGTERM / SIGINT during a graceful stop: stop now.
        self._hurry = asyncio.Event()
        # What stopped the worker on its own (a claim refused for good), if anything did.
        self._failure: WorkerRequestError | None = None
        # Settled once the worker has stopped (see done()); made when first needed, in the running loop.
        self._ended: asyncio.Future[None] | None = None
        # The grace a stop on its own gives running handlers: serve()'s, else the default.
        self._grace = 2.0

    @property
    def state(self) -> WorkerState:
        return self._state

    @property
    def active_jobs(self) -> int:
        """Jobs held now (claimed and not yet ended, or whose handler has not yet returned), waiting ones included."""
        return len(self._runs)

    @overload
    def handle(self, job_type: str) -> Callable[[H], H]: ...

    @overload
    def handle(self, job_type: str, handler: H) -> H: ...

    # Typed by the overloads: under ``mypy --strict`` a decorator typed ``Any`` made the user's
    # handler untyped (``untyped-decorator``), which the consumer test's program caught.
    def handle(self, job_type: str, handler: Handler | None = None) -> Any:
        """Runs jobs of ``job_type`` with ``handler``; usable as a decorator (``@worker.handle("type")``)."""
        if not re.fullmatch(r"[\w.:-]{1,100}", job_type):
            raise ValueError(f'handle(): invalid job type "{job_type}"')
        if job_type in self._handlers:
            raise ValueError(f'handle(): "{job_type}" already has a handler')

        def register(fn: H) -> H:
            self._handlers[job_type] = fn
            return fn

        return register if handler is None else register(handler)

    def run(self, *, stop_timeout: float = 30.0, grace: float = 2.0) -> None:
        """Runs the worker in a new event loop until SIGTERM or SIGINT, then stops gracefully. Raises
        the :class:`WorkerRequestError` of a claim the server refused for good, once stopped."""
        asyncio.run(self.serve(stop_timeout=stop_timeout, grace=grace))

    async def serve(self, *, stop_timeout: float = 30.0, grace: float = 2.0, signals: bool = True) -> None:
        """Starts, then waits until SIGTERM/SIGINT (when ``signals``) or :meth:`stop`, and stops gracefully.
        A claim the server refused for good stops the worker at once; then this raises its
        :class:`WorkerRequestError`, so a worker script exits non-zero with the server's message."""
        loop = asyncio.get_running_loop()
        self._grace = grace
        await self.start()
        installed: list[signal.Signals] = []
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, lambda: self._on_signal(stop_timeout, grace))
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):
                    pass  # Windows, or not the main thread: call stop() yourself
        try:
            assert self._claiming is not None
            await asyncio.wait({self._claiming})
            await self.stop(timeout=stop_timeout, grace=grace)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
        if self._failure is not None:
            raise self._failure

    async def start(self) -> None:
        """Starts claiming jobs of the handled types (in the running event loop)."""
        if self._state != "idle":
            raise RuntimeError(f"start(): the worker is {self._state}")
        if not self._handlers:
            raise RuntimeError("start(): register a handler with handle() first")
        bulk = (self.limits.max_batch_events, self.limits.max_batch_bytes) if self.bulk_writes else None
        api = WorkerApi(self.url, self.api_key, bulk, on_answer=self._error_log.answered)
        report = self._report
        self._env = RunEnvironment(
            api=api,
            watch=SignalWatch(api, self.poll_wait, self.backoff, lambda error: report(error, "signals", None)),
            backoff=self.backoff,
            throttle=self.throttle,
            lease_ms=self.lease_ms,
            limits=self.limits,
            executor=self._threads,
            cancel_tasks=self.cancel_tasks,
            report=report,
        )
        self._wake = asyncio.Event()
        self._state = "running"
        self._claiming = asyncio.get_running_loop().create_task(self._claim_loop())

    async def stop(self, *, timeout: float = 30.0, grace: float = 2.0) -> None:
        """Graceful stop: claims no more jobs, releases the ones waiting for a slot (``prefetch``) at
        once, lets running handlers finish for up to ``timeout`` seconds, then aborts them
        (``ctx.abort_reason == "stopped"``; an async handler's task is cancelled) and releases their
        leases, so the server re-queues them with their last checkpoint. ``grace`` is how long a
        handler then has to settle (it may checkpoint), and again to deliver its reports and release
        its lease."""
        if self._stopped is None:
            self._stopped = asyncio.get_running_loop().create_task(self._shutdown(timeout, grace))
        await asyncio.shield(self._stopped)

    async def done(self) -> None:
        """Returns once the worker has stopped (after :meth:`stop`; at once for one never started);
        raises the :class:`WorkerRequestError` that stopped it on its own (a claim the server refused
        for good). For a worker driven by :meth:`start` and :meth:`stop`: :meth:`serve` raises it
        itself."""
        if self._state == "idle":
            return
        await asyncio.shield(self._end_future())

    def _end_future(self) -> asyncio.Future[None]:
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
            if self._state == "stopped":
                self._settle_end()
        return self._ended

    def _settle_end(self) -> None:
        ended = self._ended
        if ended is None or ended.done():
            return
        if self._failure is None:
            ended.set_result(None)
        else:
            ended.set_exception(self._failure)
            ended.exception()  # retrieved here: no "never retrieved" warning for an app that does not ask

    def _on_signal(self, timeout: float, grace: float) -> None:
        """SIGTERM or SIGINT: the first stops gracefully; another during that stop (a second Ctrl-C)
        stops now: running handlers are aborted and their jobs released without waiting out ``timeout``."""
        if self._stopped is None:
            # Waiting jobs are released at once, not waited for.
            running = len(self._runs) - len(self._waiting)
            if running and timeout > 0:
                _log.warning(
                    "jobwire worker: stopping: %d running job%s may finish within %g s (signal again to stop now)",
                    running,
                    "" if running == 1 else "s",
                    timeout,
                )
            self._request_stop(timeout, grace)
        elif not self._hurry.is_set():
            _log.warning("jobwire worker: stopping now: running handlers are aborted and their jobs released")
            self._hurry.set()

    def _request_stop(self, timeout: float, grace: float) -> None:
        if self._stopped is None:
            self._stopped = asyncio.get_running_loop().create_task(self._shutdown(timeout, grace))

    async def _shutdown(self, timeout: float, grace: float) -> None:
        if self._state == "idle":
            self._state = "stopped"
            return
        env = self._env
        assert env is not None and self._wake is not None
        self._state = "stopping"
        # Jobs waiting for a slot go back to the queue now, for another worker: none starts any more.
        waiting = set(self._waiting)
        released = asyncio.gather(*(run.interrupt(grace) for run in waiting))
        if self._claim_task is not None:
            if env.api.end_claim_gently():
                # The node hears of it before it answers, or has answered: the answer is read, and
                # the claim loop gives its jobs back. At most _GENTLE_STOP for that (a proxy that
                # ignores a half-close), then the claim is cancelled.
                asyncio.get_running_loop().call_later(_GENTLE_STOP, self._claim_task.cancel)
            else:
                self._claim_task.cancel()
        self._wake.set()
        if self._claiming is not None:
            await asyncio.wait({self._claiming})
        runs = list(self._runs)
        if runs:
            # Until they finish, the timeout, or a second signal (a stop in a hurry).
            finishing = asyncio.ensure_future(asyncio.wait({run.finished for run in runs}))
            hurried = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait({finishing, hurried}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finishing.cancel()
            hurried.cancel()
        await asyncio.gather(released, *(run.interrupt(grace) for run in list(self._runs) if run not in waiting))
        await env.watch.close()
        await env.api.aclose()
        env.executor.shutdown(wait=False)
        left = self._threads.running
        if left:
            # Their jobs are released (another worker runs them again); the process need not wait for them.
            _log.warning(
                "jobwire worker: %d handler%s still running after the stop (a plain def that does not check ctx.cancelled); left to end with the process",
                left,
                "" if left == 1 else "s",
            )
        self._state = "stopped"
        self._settle_end()

    async def _claim_loop(self) -> None:
        """One claim at a time, only while a slot is free (or a place among the ``prefetch`` jobs that
        wait for one). The outcomes of jobs that just finished ride the next claim (``done``)."""
        env = self._env
        assert env is not None
        try:
            await self._claims(env)
        finally:
            env.api.send_held()

    async def _claims(self, env: RunEnvironment) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        failures = 0
        while self._state == "running":
            # A slot frees when its handler returns: the next claim goes out at once and carries the
            # outcomes of the jobs that just finished. At most `concurrency + prefetch` jobs are held
            # (running or waiting); jobs still delivering count too, up to as many again (a line of
            # short jobs ends at once, and its outcomes ride this claim).
            most = self.concurrency + self.prefetch
            free = min(most - self._handling, 2 * most - len(self._runs), _MAX_CLAIM)
            # While prefetched jobs wait, the next claim waits for room for half a prefetch: one
            # request for many jobs, not one per slot that frees.
            refill = -(-self.prefetch // 2) if self._waiting else 1
            if free < refill:
                # No claim now: what waited for one goes on its own; a job whose handler returns
                # meanwhile frees a slot, wakes this loop, and its outcome rides the claim. While
                # prefetched jobs run one after another, their outcomes wait for the refill's claim
                # (at most the claim window), not a request each.
                if free <= 0:
                    env.api.send_held()
                self._wake.clear()
                env.api.claim_coming = True
                await self._wake.wait()
                continue
            sent_at = loop.time()
            task = loop.create_task(env.api.claim(list(self._handlers), self.name, self.lease_ms, self.poll_wait, free))
            self._claim_task = task
            await asyncio.wait({task})
            self._claim_task = None
            if task.cancelled():
                break
            error = task.exception()
            if error is not None:
                if self._state != "running":
                    break
                self._report(error, "claim", None)
                if _refused_for_good(error):
                    # It will never succeed (a wrong key, say): the worker stops, handlers aborted at
                    # once (with serve()'s grace), and serve() and done() raise it.
                    self._failure = error
                    self._request_stop(0.0, self._grace)
                    break
                failures += 1
                await self._sleep(retry_delay(self.backoff, failures, error))
                continue
            failures = 0
            claims, carried = task.result()
            if not claims:
                # A server that does not hold the claim (a zero --poll-max-wait) must not be hammered. A
                # claim that carried outcomes was answered without waiting: the next one waits.
                if not carried:
                    await self._sleep(MIN_POLL - (loop.time() - sent_at))
                continue
            for claim in claims:
                if self._state != "running":
                    await release_lease(env, claim.job["id"], claim.lease["token"], "worker stopping", 5.0, ran=False)
                else:
                    self._run(claim)

    async def _sleep(self, seconds: float) -> None:
        """Sleeps, or less when the worker stops meanwhile."""
        assert self._wake is not None
        if seconds <= 0:
            return
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _run(self, claim: Claim) -> None:
        env = self._env
        assert env is not None and self._wake is not None
        job_type = claim.job["type"]
        handler = self._handlers.get(job_type) or _no_handler(self.name, job_type)
        run = JobRun(claim, env)
        self._runs.add(run)
        self._handling += 1
        wake = self._wake

        # Callbacks, not a task each: two tasks per job were a fifth of a short job's cost here.
        def handler_returned(_: object) -> None:
            # Or, for a run that never started, dropped (cancelled, lost) or released while it waited.
            self._handling -= 1
            self._waiting.pop(run, None)
            self._start_waiting()
            wake.set()

        def free_slot(_: object) -> None:
            # Once the job ended and its handler returned (or never will run).
            if run.finished.done() and run.handler_settled.done() and run in self._runs:
                self._runs.discard(run)
                wake.set()

        run.handler_settled.add_done_callback(handler_returned)
        run.finished.add_done_callback(free_slot)
        run.handler_settled.add_done_callback(free_slot)
        run.hold()
        self._waiting[run] = handler
        self._start_waiting()

    def _start_waiting(self) -> None:
        """Starts waiting runs in claim order while a slot is free; none once the worker is stopping."""
        # A run dropped meanwhile is taken out unstarted; until its handler_returned() it still
        # counts as held, so this errs towards starting one run too few, never one too many.
        while self._state == "running" and self._waiting and self._handling - len(self._waiting) < self.concurrency:
            run = next(iter(self._waiting))
            handler = self._waiting.pop(run)
            if run.waiting:
                run.start(handler)

    def _report(self, error: BaseException, operation: str, job_id: str | None) -> None:
        try:
            self._on_error(error, operation, job_id)
        except Exception:  # noqa: BLE001 — on_error must not take the worker down
            pass


def _no_handler(name: str, job_type: str) -> Handler:
    def fail(job: dict[str, Any], ctx: Any) -> None:
        raise JobFailure("no_handler", f'Worker {name} has no handler for jobs of type "{job_type}"')

    return fail


def _refused_for_good(error: BaseException) -> TypeGuard[WorkerRequestError]:
    """A claim the server refused for good (not ``transient``): retrying cannot help, so the worker
    stops. ``WorkerApi.claim`` has already dealt with an older server's refusal of ``max`` or ``done``."""
    return isinstance(error, WorkerRequestError) and not error.transient
