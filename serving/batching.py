"""Adaptive batching of generation requests that arrive together.

Concurrent ``/generate`` requests queue here; one worker takes whatever is waiting (and, when requests
overlapped in the previous round, waits at most ``max_latency_ms`` for more), groups the rows that share
generation settings (all but the seed), and runs each group as one batch of ``(prompt, seed)`` rows on the model. While
a batch runs, new requests gather, so the batch size follows the load: one row at a time when traffic is
light, up to ``max_batch_size`` rows under load. A row's text depends only on its prompt, seed and
settings (:meth:`models.contract.WriterModel.generate_rows`), so batching never changes what a seed writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

Rows = list[tuple[str, int]]


@dataclass
class _Job:
    key: Hashable
    rows: Rows
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchResult:
    """One request's texts and where its time went."""

    texts: list[str]
    queue_s: float
    generate_s: float
    batch_rows: int


class Batcher:
    """Collects concurrent jobs into batches and runs them one batch at a time in a worker thread.

    Args:
        run: ``run(key, rows) -> texts``, called off the event loop with every row of one batch.
        max_batch_size: Most rows in one batch (a single job larger than this still runs whole).
        max_latency_ms: How long the worker waits for more jobs when fewer than ``max_batch_size`` rows
            are queued (0: take only what is already waiting).
    """

    def __init__(self, run: Callable[[Any, Rows], Sequence[str]], max_batch_size: int = 16,
                 max_latency_ms: float = 10.0) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be ≥ 1, got {max_batch_size}")
        if max_latency_ms < 0:
            raise ValueError(f"max_latency_ms must be ≥ 0, got {max_latency_ms}")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000
        self.batch_sizes: list[int] = []  # rows per batch run, for tests and the benchmark
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._carry: list[_Job] = []
        self._busy = False  # requests overlapped last round: worth waiting a little for company

    async def submit(self, key: Hashable, rows: Rows) -> BatchResult:
        """Queues one job (rows sharing ``key``) and waits for its texts, in row order."""
        if not rows:
            return BatchResult([], 0.0, 0.0, 0)
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._loop())
        job = _Job(key, list(rows), asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        return await job.future

    async def close(self) -> None:
        """Stops the worker (pending jobs get a RuntimeError)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for job in self._carry + self._drain():
            if not job.future.done():
                job.future.set_exception(RuntimeError("the batcher was closed"))
        self._carry = []

    def _drain(self) -> list[_Job]:
        jobs = []
        while self._queue is not None and not self._queue.empty():
            jobs.append(self._queue.get_nowait())
        return jobs

    async def _collect(self) -> list[_Job]:
        assert self._queue is not None
        jobs = self._carry or [await self._queue.get()]
        self._carry = []
        jobs += self._drain()
        deadline = time.perf_counter() + (self.max_latency_s if self._busy or len(jobs) > 1 else 0.0)
        while sum(len(j.rows) for j in jobs) < self.max_batch_size:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
            jobs += self._drain()
        return jobs

    async def _loop(self) -> None:
        while True:
            jobs = await self._collect()
            key = jobs[0].key
            batch, rows = [], 0
            for job in jobs:  # the first job's settings, in arrival order, up to the size cap
                if job.key == key and (not batch or rows + len(job.rows) <= self.max_batch_size):
                    batch.append(job)
                    rows += len(job.rows)
                else:
                    self._carry.append(job)
            start = time.perf_counter()
            try:
                texts = await asyncio.to_thread(self.run, key, [row for job in batch for row in job.rows])
            except Exception as exc:  # handed to every waiting request
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            took = time.perf_counter() - start
            self._busy = len(batch) > 1 or bool(self._carry) or (self._queue is not None and not self._queue.empty())
            self.batch_sizes.append(rows)
            offset = 0
            for job in batch:
                part = list(texts[offset: offset + len(job.rows)])
                offset += len(job.rows)
                if not job.future.done():
                    job.future.set_result(BatchResult(part, start - job.queued_at, took, rows))
