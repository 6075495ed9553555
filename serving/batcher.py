"""Dynamic batching: concurrent requests' prepared frames gathered into one onnxruntime run.

The batcher is one thread, the model's: decode threads ``put`` a creative's prepared
frames with a callback, and the thread takes the first waiting creative, lets more join
until the batch holds ``max_batch`` frames or ``max_wait_s`` has passed (no wait at all
when ``more_coming`` says no other creative is being prepared: a lone request is not
delayed), runs the batch, and calls each creative's callback with its rows. Nothing of
it runs on the event loop: a request wakes the loop once, when its scores are ready.
The queue itself is bounded by the engine's admission count (a full engine answers 503
before anything is queued). With ``buckets`` (GPU), the batch is padded to the smallest
bucket that holds it, so the model only ever sees those few shapes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

RunFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Done = Callable[[np.ndarray, np.ndarray], None]
Fail = Callable[[BaseException], None]


@dataclass
class _Item:
    x: np.ndarray  # (n, V, S, S, 3) one creative's frames
    done: Done  # called with its (quality, tags) rows, on the model thread
    fail: Fail  # called with the model's error instead


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


def resolve_soon(loop: asyncio.AbstractEventLoop, fut: asyncio.Future, value=None, error=None) -> None:
    """Settle ``fut`` on its loop from any thread (a request that gave up leaves it cancelled: no-op)."""

    def settle() -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)

    loop.call_soon_threadsafe(settle)


class Batcher:
    """Gathers ``put`` inputs into batches for ``run`` on one model thread."""

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
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="onnx", daemon=True)
        self._lock = threading.Lock()
        self._open = False

    def start(self) -> None:
        self._open = True
        self._thread.start()

    def put(self, x: np.ndarray, done: Done, fail: Fail) -> None:
        """Queue one creative's frames (from any thread); ``done`` or ``fail`` is called on the model thread."""
        with self._lock:  # NOTE: nothing may slip in behind close()'s sentinel or a dead thread's drain
            if not self._open or not self._thread.is_alive():
                raise RuntimeError("batcher is not running")
            self._queue.put(_Item(x, done, fail))

    async def submit(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``put`` for a caller on an event loop: one creative's frames -> its (quality, tags)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.put(x, lambda q, t: resolve_soon(loop, fut, (q, t)), lambda e: resolve_soon(loop, fut, error=e))
        return await fut

    async def close(self) -> None:
        """Run what is queued, then stop the model thread."""
        with self._lock:
            if not self._open:
                return
            self._open = False
            self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    def _gather(self, first: _Item) -> tuple[list[_Item], bool]:
        items, rows = [first], len(first.x)
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0 or (self.more_coming is not None and not self.more_coming()):
                    break
                try:
                    nxt = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if nxt is None:
                return items, True
            items.append(nxt)
            rows += len(nxt.x)
        return items, False

    @staticmethod
    def _fail(items: list[_Item], e: BaseException) -> None:
        for it in items:
            try:
                it.fail(e)
            except Exception:  # noqa: BLE001  (a callback's own error must not stop the others)
                log.exception("could not report a failed batch to a request")

    def _run_batch(self, items: list[_Item]) -> None:
        try:
            x = items[0].x if len(items) == 1 else np.concatenate([it.x for it in items])
            if self.on_batch:
                self.on_batch(len(x))
            q, t = run_in_buckets(self.run, x, self.buckets)
        except Exception as e:  # noqa: BLE001  (every waiting request gets the model's error)
            log.exception("batch of %d creatives failed", len(items))
            self._fail(items, e)
            return
        start = 0
        for it in items:
            n = len(it.x)
            try:
                it.done(q[start : start + n], t[start : start + n])
            except Exception as e:  # noqa: BLE001  (one creative's result must not stop the thread)
                self._fail([it], e)
            start += n

    def _loop(self) -> None:
        closing, items = False, []
        try:
            while not closing:
                first = self._queue.get()
                if first is None:
                    break
                items, closing = self._gather(first)
                self._run_batch(items)
                items = []
        except BaseException as e:  # the thread is dying: fail what it holds
            log.exception("the batcher thread stopped")
            self._fail(items, RuntimeError(f"batcher stopped: {e}"))
        finally:
            # NOTE: whatever is still queued (or slips in before put() sees this) gets an answer.
            with self._lock:
                self._open = False
            while True:
                try:
                    rest = self._queue.get_nowait()
                except queue.Empty:
                    break
                if rest is not None:
                    self._fail([rest], RuntimeError("batcher is not running"))
