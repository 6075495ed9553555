"""Dynamic batching: concurrent requests' prepared frames gathered into one onnxruntime run.

The first queued request opens a batch; more join until it holds ``max_batch`` frames
or ``max_wait_s`` has passed (no wait at all when ``more_coming`` says no other request
is on its way: a lone request is not delayed); the batch runs on one model thread while
the next one gathers. The queue itself is bounded by the engine's admission count (a full engine
answers 503 before anything is queued). With ``buckets`` (GPU), the batch is padded
to the smallest bucket that holds it, so the model only ever sees those few shapes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

RunFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class _Item:
    x: np.ndarray  # (n, V, S, S, 3) one creative's frames
    future: asyncio.Future


def pad_to_bucket(x: np.ndarray, buckets: Sequence[int]) -> np.ndarray:
    """``x`` padded with zero rows to the smallest bucket >= len(x) (``x`` itself when none is)."""
    n = len(x)
    size = next((b for b in sorted(buckets) if b >= n), n)
    if size == n:
        return x
    return np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)])


def run_in_buckets(run: RunFn, x: np.ndarray, buckets: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``x`` through the model in chunks of at most the largest bucket, each padded to a bucket."""
    if not buckets:
        return run(x)
    top = max(buckets)
    qs, ts = [], []
    for i in range(0, len(x), top):
        chunk = x[i : i + top]
        q, t = run(pad_to_bucket(chunk, buckets))
        qs.append(q[: len(chunk)])
        ts.append(t[: len(chunk)])
    return np.concatenate(qs), np.concatenate(ts)


class Batcher:
    """Gathers ``submit``-ted inputs into batches for ``run`` (one model thread)."""

    def __init__(
        self,
        run: RunFn,
        max_batch: int = 32,
        max_wait_s: float = 0.002,
        buckets: Sequence[int] | None = None,
        on_batch: Callable[[int], None] | None = None,
        more_coming: Callable[[], bool] | None = None,
    ):
        self.run, self.max_batch, self.max_wait_s = run, max_batch, max_wait_s
        self.more_coming = more_coming
        self.buckets = list(buckets) if buckets else None
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="onnx")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One creative's prepared frames -> its (quality, tags), run with whatever else is waiting."""
        if self._task is None or self._task.done():
            raise RuntimeError("batcher is not running")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(x, fut))
        return await fut

    async def close(self) -> None:
        """Run what is queued, then stop."""
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            await self._task
        self._executor.shutdown(wait=True)

    async def _gather(self, first: _Item) -> tuple[list[_Item], bool]:
        loop = asyncio.get_running_loop()
        items, rows, closing = [first], len(first.x), False
        deadline = loop.time() + self.max_wait_s
        while rows < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0 or (self.more_coming is not None and not self.more_coming()):
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            if nxt is None:
                closing = True
                break
            items.append(nxt)
            rows += len(nxt.x)
        return items, closing

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        closing = False
        while not closing:
            first = await self._queue.get()
            if first is None:
                break
            items, closing = await self._gather(first)
            x = items[0].x if len(items) == 1 else np.concatenate([it.x for it in items])
            if self.on_batch:
                self.on_batch(len(x))
            try:
                q, t = await loop.run_in_executor(self._executor, run_in_buckets, self.run, x, self.buckets)
            except Exception as e:  # noqa: BLE001  (every waiting request gets the model's error)
                log.exception("batch of %d failed", len(x))
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            start = 0
            for it in items:
                n = len(it.x)
                if not it.future.done():
                    it.future.set_result((q[start : start + n], t[start : start + n]))
                start += n
