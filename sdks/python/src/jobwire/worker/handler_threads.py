"""The threads that run plain ``def`` handlers: each in a daemon thread of its own.

A ``ThreadPoolExecutor``'s threads are joined when the interpreter exits. A handler that cannot
notice its abort (one long library call: a transcription, a model's inference) would then keep a
stopped worker's process alive until that call returned, long after :meth:`Worker.stop` had given
up on it and released its job (which another worker is already running again). A daemon thread
ends with the process instead."""

from __future__ import annotations

import threading
from concurrent.futures import Executor, Future
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class HandlerThreads(Executor):
    """An executor that starts a daemon thread per call (a worker runs at most ``concurrency`` at once)."""

    def __init__(self, name_prefix: str) -> None:
        self._name_prefix = name_prefix
        self._lock = threading.Lock()
        self._live: set[threading.Thread] = set()
        self._started = 0
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            try:
                if not future.set_running_or_notify_cancel():
                    return
                try:
                    result = fn(*args, **kwargs)
                except BaseException as error:  # noqa: BLE001 — the handler's outcome, whatever it is
                    future.set_exception(error)
                else:
                    future.set_result(result)
            finally:
                with self._lock:
                    self._live.discard(threading.current_thread())

        with self._lock:
            if self._closed:
                raise RuntimeError("cannot run a handler after the worker stopped")
            self._started += 1
            thread = threading.Thread(target=run, name=f"{self._name_prefix}_{self._started}", daemon=True)
            self._live.add(thread)
        thread.start()
        return future

    @property
    def running(self) -> int:
        """Handlers whose thread has not returned yet."""
        with self._lock:
            return len(self._live)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            live = list(self._live)
        if wait:
            for thread in live:
                thread.join()
