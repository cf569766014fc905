"""A bounded worker for compute done while the client waits (``/v1/apply``): its own threads, not
the request thread pool, and a fixed number of calls in flight (running + waiting)."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


class Busy(Exception):
    """Every slot of the worker is taken."""


class BoundedWorker:
    def __init__(self, threads: int, capacity: int, name: str):
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(capacity)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the worker's threads; :class:`Busy` at once when all slots are taken.
        A slot is freed when the call ends, even if the awaiting request went away before."""
        if not self._slots.acquire(blocking=False):
            raise Busy()
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
