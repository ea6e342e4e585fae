"""Dynamic batching: requests that arrive close together run as one batch.

A request waits at most ``max_delay_ms`` (counted from the oldest waiting request) for others
to join it, up to ``max_batch`` samples; the batch's inputs are concatenated along axis 0, run
once in a worker thread, and the outputs are split back to each caller. Requests carry one
sample or more (their leading axis). Only requests with the same input names, dtypes and
trailing shapes share a batch; a request that does not match starts the next one.

A failed batch is run again request by request, so the one bad request fails and the others
get their answers. The queue is bounded: a request beyond ``max_queue`` is refused at once
with :class:`OverloadError` (429), never queued without limit.

``max_batch=1`` is the pass-through mode: no collector task, the request goes straight to a
worker thread, at the cost of one executor hop. ``max_delay_ms=0`` with a larger
``max_batch`` batches only what is already waiting when a worker frees up.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from edgeloop.core.errors import ConfigError, ConflictError, OverloadError
from edgeloop.runtime.batch import (
    BatcherStats,
    BatchResult,
    Runner,
    Signature,
    concatenate,
    sample_count,
    signature,
    split,
)
from edgeloop.runtime.engine import Feeds, LoadedModel

__all__ = ["BatchResult", "BatcherStats", "DynamicBatcher", "Runner"]


@dataclass(slots=True)
class _Request:
    feeds: Feeds
    rows: int
    signature: Signature
    enqueued: float  # perf_counter seconds; the same clock in the loop and worker threads
    future: asyncio.Future[BatchResult]


class DynamicBatcher:
    """Batches requests for one model; see the module docstring.

    ``runner`` is a loaded model or any function from feeds to outputs (such as
    :meth:`ModelPool.runner`). ``workers`` batches may run at once, each in its own thread.
    ``on_batch`` is called in the event loop with the sample count of every batch formed
    (for a batch-size histogram).

    Raises:
        ConfigError: a limit is not positive, or ``max_queue < max_batch`` (a batch could
            never fill).
    """

    def __init__(
        self,
        runner: Runner | LoadedModel,
        *,
        max_batch: int,
        max_delay_ms: float,
        max_queue: int,
        workers: int = 1,
        name: str = "model",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        _check_limits(max_batch, max_delay_ms, max_queue, workers)
        self.name = name
        self.max_batch = max_batch
        self.max_delay_ms = max_delay_ms
        self.max_queue = max_queue
        self.workers = workers
        self._run: Runner = runner.run if isinstance(runner, LoadedModel) else runner
        self._on_batch = on_batch
        self._direct = max_batch == 1
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._waiting = 0  # pass-through requests waiting for a worker
        self._active = 0  # admitted and not yet answered
        self._in_flight = 0
        self._closing = False
        self._drain = True
        self._counts: Counter[str] = Counter()
        self._sizes: Counter[int] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._collector: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._arrived: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None

    async def start(self) -> None:
        """Start the worker threads (and the collector task when batching), in this loop.

        Raises:
            ConflictError: already started.
        """
        if self._loop is not None:
            raise ConflictError(f"batcher for {self.name!r} is already started")
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=f"batch-{self.name}")
        self._slots = asyncio.Semaphore(self.workers)
        self._arrived = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        if not self._direct:
            self._collector = self._loop.create_task(self._collect(), name=f"batch-{self.name}")

    async def stop(self, *, drain: bool = True) -> None:
        """Refuse new requests; answer the admitted ones (``drain``) or fail the waiting ones
        with ConflictError; then stop the worker threads. Stopping twice is a no-op."""
        if self._loop is None or self._closing:
            return
        self._closing, self._drain = True, drain
        if not drain:
            while self._queue:
                self._fail(self._queue.popleft(), "stopped before this request ran")
            self._queued_rows = 0
        if self._arrived is not None:
            self._arrived.set()
        if self._collector is not None:
            await self._collector
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._drained is not None:
            await self._drained.wait()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    async def submit(self, feeds: Feeds) -> BatchResult:
        """Queue one request and wait for its outputs.

        Raises:
            DataError: the feeds are not arrays sharing one leading (sample) axis, or the model
                refused this request (raised by the runner; other requests are unaffected).
            OverloadError: ``max_queue`` requests are already waiting.
            ConflictError: the batcher is not running (not started, or stopping).
        """
        if self._loop is None or self._closing:
            state = "stopping" if self._closing else "not started"
            raise ConflictError(
                f"batcher for {self.name!r} is {state}; it takes no requests",
                hint="retry on another replica, or after the model is loaded again",
            )
        rows = sample_count(feeds)
        depth = self._waiting if self._direct else len(self._queue)
        if depth >= self.max_queue:
            self._counts["rejected"] += 1
            raise OverloadError(
                f"model {self.name!r} has {depth} requests waiting, its limit (max_queue) is "
                f"{self.max_queue}",
                hint="retry after a short wait (see Retry-After)",
            )
        self._admitted(rows)
        try:
            if self._direct:
                return await self._pass_through(feeds, rows)
            return await self._enqueue(feeds, rows)
        finally:
            self._finished()

    def stats(self) -> BatcherStats:
        """The counters as of now."""
        c = self._counts
        return BatcherStats(
            requests=c["requests"],
            samples=c["samples"],
            batches=c["batches"],
            rejected=c["rejected"],
            failed=c["failed"],
            retried_batches=c["retried"],
            queue_depth=self._waiting if self._direct else len(self._queue),
            in_flight=self._in_flight,
            batch_sizes=dict(self._sizes),
        )

    # -- event loop side -------------------------------------------------------------------

    def _admitted(self, rows: int) -> None:
        self._counts["requests"] += 1
        self._counts["samples"] += rows
        self._active += 1
        if self._drained is not None:
            self._drained.clear()

    def _finished(self) -> None:
        self._active -= 1
        if self._active == 0 and self._drained is not None:
            self._drained.set()

    async def _pass_through(self, feeds: Feeds, rows: int) -> BatchResult:
        # The lean path (max_batch=1): no future, no list, no collector; one executor hop.
        if self._slots is None or self._loop is None:
            raise ConflictError(f"batcher for {self.name!r} is not started")
        enqueued = time.perf_counter()
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            if self._closing and not self._drain:
                raise _stopped(self.name)
            self._in_flight += 1
            try:
                result = await self._loop.run_in_executor(
                    self._executor, self._timed_run, feeds, rows, enqueued
                )
            finally:
                self._in_flight -= 1
        finally:
            self._slots.release()
        self._counts["batches"] += 1
        self._sizes[rows] += 1
        if self._on_batch is not None:
            self._on_batch(rows)
        if isinstance(result, Exception):
            self._counts["failed"] += 1
            raise result
        return result

    async def _enqueue(self, feeds: Feeds, rows: int) -> BatchResult:
        if self._loop is None or self._arrived is None:
            raise ConflictError(f"batcher for {self.name!r} is not started")
        future: asyncio.Future[BatchResult] = self._loop.create_future()
        self._queue.append(_Request(feeds, rows, signature(feeds), time.perf_counter(), future))
        self._queued_rows += rows
        self._arrived.set()
        return await future

    async def _collect(self) -> None:
        """Form batches: take a free worker, wait out the oldest request's delay, dispatch."""
        try:
            await self._collect_forever()
        except Exception as exc:  # a bug here must not leave callers waiting forever
            self._closing = True
            while self._queue:
                request = self._queue.popleft()
                if not request.future.done():
                    request.future.set_exception(exc)
            raise

    async def _collect_forever(self) -> None:
        if self._loop is None or self._slots is None or self._arrived is None:
            return
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            await self._wait_for_batch()
            batch = self._take()
            if not batch:
                self._slots.release()
                continue
            task = self._loop.create_task(self._dispatch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _wait_for_batch(self) -> None:
        if self._arrived is None or self._loop is None or not self._queue:
            return
        deadline = self._queue[0].enqueued + self.max_delay_ms / 1000.0
        while self._queued_rows < self.max_batch and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Request]:
        """Pop the oldest live request and the compatible ones behind it, up to max_batch."""
        batch: list[_Request] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # the caller gave up (timeout, disconnect)
                self._pop()
                continue
            if batch and (
                head.signature != batch[0].signature or rows + head.rows > self.max_batch
            ):
                break
            batch.append(self._pop())
            rows += head.rows
        return batch

    def _pop(self) -> _Request:
        request = self._queue.popleft()
        self._queued_rows -= request.rows
        return request

    async def _dispatch(self, batch: list[_Request]) -> None:
        if self._loop is None or self._slots is None:
            return
        self._in_flight += 1
        try:
            results, retried = await self._loop.run_in_executor(
                self._executor, self._run_batch, batch
            )
        except Exception as exc:  # the executor itself failed (shut down): fail the batch
            results, retried = [exc] * len(batch), False
        finally:
            self._in_flight -= 1
            self._slots.release()
        for request, result in zip(batch, results, strict=True):
            if request.future.done():
                continue
            if isinstance(result, BaseException):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)
        self._record(
            batch, results, retried=retried
        )  # last: a failing on_batch hook loses no answer

    def _record(
        self, batch: list[_Request], results: list[BatchResult | Exception], *, retried: bool
    ) -> None:
        size = sum(r.rows for r in batch)
        self._counts["batches"] += 1
        self._counts["retried"] += int(retried)
        self._counts["failed"] += sum(isinstance(r, Exception) for r in results)
        self._sizes[size] += 1
        if self._on_batch is not None:
            self._on_batch(size)

    def _fail(self, request: _Request, why: str) -> None:
        if not request.future.done():
            request.future.set_exception(_stopped(self.name, why))

    # -- worker thread side ----------------------------------------------------------------

    def _run_batch(self, batch: list[_Request]) -> tuple[list[BatchResult | Exception], bool]:
        """Run ``batch`` as one; if that fails, run each request alone (True: retried)."""
        if len(batch) == 1:
            return [self._run_one(batch[0])], False
        start = time.perf_counter()
        try:
            feeds = concatenate([r.feeds for r in batch], batch[0].signature)
            parts = split(self._run(feeds), [r.rows for r in batch])
        except Exception:  # one bad request, or outputs without a batch axis: isolate
            return [self._run_one(r) for r in batch], True
        ms = (time.perf_counter() - start) * 1000.0
        total = sum(r.rows for r in batch)
        return [
            BatchResult(part, (start - r.enqueued) * 1000.0, ms, total)
            for r, part in zip(batch, parts, strict=True)
        ], False

    def _run_one(self, request: _Request) -> BatchResult | Exception:
        return self._timed_run(request.feeds, request.rows, request.enqueued)

    def _timed_run(self, feeds: Feeds, rows: int, enqueued: float) -> BatchResult | Exception:
        start = time.perf_counter()
        try:
            outputs = self._run(feeds)
        except Exception as exc:  # handed to this request's caller only
            return exc
        ms = (time.perf_counter() - start) * 1000.0
        return BatchResult(outputs, (start - enqueued) * 1000.0, ms, rows)


def _stopped(name: str, why: str = "stopped before this request ran") -> ConflictError:
    return ConflictError(
        f"batcher for {name!r} {why}",
        hint="retry: the server is shutting down or swapping this model",
    )


def _check_limits(max_batch: int, max_delay_ms: float, max_queue: int, workers: int) -> None:
    for what, value in (("max_batch", max_batch), ("max_queue", max_queue), ("workers", workers)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{what}={value!r} is not valid; expected an integer >= 1")
    if not (max_delay_ms >= 0 and math.isfinite(max_delay_ms)):
        raise ConfigError(f"max_delay_ms={max_delay_ms!r} is not valid; expected >= 0")
    if max_queue < max_batch:
        raise ConfigError(
            f"max_queue={max_queue} is below max_batch={max_batch}; a batch could never fill",
            hint="set max_queue to at least max_batch (a few batches' worth is typical)",
        )
