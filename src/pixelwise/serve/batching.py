"""One model, many requests: a bounded queue in front of a single inference thread.

Requests from the event loop put a job on a bounded queue and await its future; a full
queue is refused at once (the service answers 503) instead of piling up latency. One
worker thread owns the model, so PyTorch never runs two forward passes that fight over the
same cores. Whatever is waiting when the worker wakes up is taken as one micro-batch (up
to `max_batch`) and handed to `fn` together; the predictor runs same-size images of a
batch in one forward pass.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue is full: the caller should answer 503 and let the client retry."""


@dataclass
class _Job:
    payload: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    abandoned: bool = field(default=False)  # the request timed out or the client went away


_STOP = object()


class InferenceQueue:
    """Runs `fn(payloads) -> results` (same length, same order) on one thread, in micro-batches."""

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], max_queue: int = 32, max_batch: int = 8,
                 name: str = "pixelwise-inference"):
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be at least 1")
        self.fn = fn
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self.batches_run = 0
        self.items_run = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Let queued jobs finish, then end the worker thread."""
        if not self._thread.is_alive():
            return
        self._queue.put(_STOP)  # blocking put: the stop marker must get in even when full
        self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def submit(self, payload: Any, timeout: float | None = None) -> Any:
        """Queue one payload and wait for its result.

        Raises Overloaded when the queue is full, asyncio.TimeoutError after `timeout`
        seconds, and whatever `fn` raised for this payload.
        """
        loop = asyncio.get_running_loop()
        job = _Job(payload, loop, loop.create_future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"{self.max_queue} requests are already waiting") from None
        try:
            return await asyncio.wait_for(job.future, timeout)
        except BaseException:
            job.abandoned = True  # timed out or cancelled: the worker skips it instead of computing for nobody
            raise

    # ------------------------------------------------------------ worker thread
    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs = [first]
            stop_after = False
            while len(jobs) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop_after = True
                    break
                jobs.append(nxt)
            live = [job for job in jobs if not job.abandoned]
            if live:
                self._run(live)
            if stop_after:
                return

    def _run(self, jobs: list[_Job]) -> None:
        try:
            results = list(self.fn([job.payload for job in jobs]))
            if len(results) != len(jobs):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(jobs)} inputs")
            outcomes: list[tuple[bool, Any]] = [(True, r) for r in results]
        except Exception as exc:  # noqa: BLE001 - re-raised in the waiting request
            if len(jobs) == 1:
                outcomes = [(False, exc)]
            else:
                # One bad input must not fail its batch-mates: run them one at a time.
                outcomes = []
                for job in jobs:
                    try:
                        outcomes.append((True, self.fn([job.payload])[0]))
                    except Exception as single_exc:  # noqa: BLE001
                        outcomes.append((False, single_exc))
        self.batches_run += 1
        self.items_run += len(jobs)
        for job, (ok, value) in zip(jobs, outcomes):
            try:
                job.loop.call_soon_threadsafe(_resolve, job.future, ok, value)
            except RuntimeError:  # that request's event loop is closed (server shutting down)
                log.debug("dropped a result: event loop closed")


def _resolve(future: asyncio.Future, ok: bool, value: Any) -> None:
    if future.done():  # cancelled by a timeout meanwhile
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
