"""The scoring engine behind the routes: admission, a decode pool, the batcher, one model.

A request is *admitted* (or refused with ``QueueFull`` -> 503 + Retry-After) before its
body is read; its creative is decoded and preprocessed on a pool of threads (more than
the cores, under a pixel budget and one video per core, so memory does not grow with
their number), and the same decode thread hands the prepared frames to the dynamic
batcher's model thread (or, with batching off, runs the model itself, as the in-process
``Scorer`` does). The Scores are built where the model
ran, and the request's coroutine is woken once, with them: the event loop does HTTP and
nothing else. A reload builds a new engine beside the old one and swaps; the old one
finishes what it admitted, then closes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from creative_qa.media import Frame, MediaError, MediaLimitError, decode_pixels, looks_like_video
from creative_qa.scorer import Scorer
from serving.batcher import Batcher, resolve_soon, run_in_buckets
from serving.metrics import Metrics
from serving.settings import Settings

log = logging.getLogger(__name__)

GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


def on_gpu(providers: list[str]) -> bool:
    return bool(GPU_PROVIDERS & set(providers))


def batching_on(settings: Settings, providers: list[str]) -> bool:
    """Dynamic batching for a model served by ``providers``: the setting, or (auto) on a GPU only."""
    return settings.batching if settings.batching is not None else on_gpu(providers)


class PixelBudget:
    """At most ``total`` pixels of still images being decoded at once, first come first served.

    Decode threads outnumber the cores (a thread waiting for the GIL leaves its core to one that
    decodes); this keeps what they hold bounded: a creative takes its header's pixel count (at
    most ``total``, so a giant one runs alone) and waits, in arrival order, until it fits; small
    ones cannot overtake a large one that is waiting, so nothing waits for ever.
    """

    def __init__(self, total: int):
        self.total, self.used = max(1, total), 0
        self._cond = threading.Condition()
        self._line: collections.deque[object] = collections.deque()

    @contextmanager
    def reserve(self, pixels: int):
        n = min(max(0, pixels), self.total)
        if n == 0:  # nothing to hold (a video, an unreadable header): no need to queue
            yield
            return
        ticket = object()
        with self._cond:
            self._line.append(ticket)
            self._cond.wait_for(lambda: self._line[0] is ticket and self.used + n <= self.total)
            self._line.popleft()
            self.used += n
            self._cond.notify_all()  # the next in line may fit too
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


class ModelError(RuntimeError):
    """Scoring failed after the creative was decoded (the model or building its Scores)."""


class QueueFull(Exception):
    """The engine holds ``max_queue`` creatives already."""


def load_scorer(settings: Settings, model: str | None = None) -> Scorer:
    """The model named by ``model`` (default: the settings'), with the serving thread count and limits."""
    return Scorer(
        model or settings.model,
        batch_size=settings.max_batch_size,
        max_frames=settings.max_frames,
        intra_op_threads=settings.threads,
        limits=settings.decode_limits(),
    )


def smoke_test(scorer: Scorer) -> None:
    """One inference on a blank creative; raises ``ValueError`` when the outputs are not sane."""
    s = scorer.spec
    x = np.zeros((1, s.views, s.input_size, s.input_size, 3), np.uint8)
    q, t = scorer.run_prepared(x)
    if q.shape != (1,) or t.shape != (1, len(scorer.tags)):
        raise ValueError(
            f"smoke inference gave shapes {q.shape} and {t.shape}, expected (1,) and (1, {len(scorer.tags)})"
        )
    finite = np.isfinite(q).all() and np.isfinite(t).all()
    if not (finite and 0 <= q.min() and q.max() <= 1 and 0 <= t.min() and t.max() <= 1):
        raise ValueError("smoke inference gave values outside [0, 1]")


class Engine:
    """One served model: admission count, decode pool and (optionally) a dynamic batcher."""

    def __init__(self, scorer: Scorer, settings: Settings, metrics: Metrics):
        self.scorer, self.settings, self.metrics = scorer, settings, metrics
        self.pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="decode")
        self.pixels = PixelBudget(int(settings.decode_megapixels * 1e6))
        self.videos = threading.BoundedSemaphore(settings.cores)  # video decoders buffer frames: one per core
        pad = settings.pad_to_buckets
        if pad is None:
            pad = on_gpu(scorer.onnx.providers)
        self.buckets = settings.buckets if pad else None
        self.batcher: Batcher | None = None
        if batching_on(settings, scorer.onnx.providers):
            self.batcher = Batcher(
                scorer.onnx.run,
                max_batch=settings.max_batch_size,
                max_wait_s=settings.max_wait_ms / 1000,
                buckets=self.buckets,
                on_batch=metrics.batch_size.observe,
                more_coming=lambda: self.preparing > 0,
            )
        self.closing = False  # set by close(): admit nothing more
        self.inflight = 0  # admitted, not yet answered
        self.preparing = 0  # being decoded and preprocessed: about to join a batch
        self._preparing_lock = threading.Lock()  # preparing goes up on the loop, down on decode threads

    async def start(self) -> None:
        if self.batcher:
            self.batcher.start()

    async def close(self, timeout_s: float = 120.0) -> None:
        """Let admitted requests finish (bounded), then stop the batcher and the pool."""
        self.closing = True
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while self.inflight and loop.time() < end:
            await asyncio.sleep(0.05)
        if self.batcher:
            await self.batcher.close()
        self.pool.shutdown(wait=False)

    @contextmanager
    def admit(self, n: int = 1):
        """Reserve ``n`` places in the queue or raise ``QueueFull`` (also while this engine is being replaced)."""
        if self.closing:
            self.metrics.rejected.inc(n)
            raise QueueFull("the model is being replaced, retry")
        if self.inflight + n > self.settings.max_queue:
            self.metrics.rejected.inc(n)
            raise QueueFull(f"{self.inflight} creatives in flight (CREATIVE_QA_MAX_QUEUE={self.settings.max_queue})")
        self.inflight += n
        self.metrics.queue_depth.inc(n)
        try:
            yield
        finally:
            self.inflight -= n
            self.metrics.queue_depth.dec(n)

    @contextmanager
    def _decode_slot(self, data: bytes, filename: str | None):
        """Wait for room to decode: a video slot, or the header's pixels in the budget."""
        if looks_like_video(data, filename):
            with self.videos:
                yield
            return
        s = self.scorer
        with self.pixels.reserve(decode_pixels(data, filename, s.decode_min_side, s.max_frames, s.limits)):
            yield

    def _work(self, data: bytes, filename: str | None, loop: asyncio.AbstractEventLoop, fut: asyncio.Future) -> None:
        """On a decode thread: decode, preprocess, then batch (or run) and settle ``fut`` with the Scores."""
        try:
            with self._decode_slot(data, filename):
                frames = self.scorer.decode(data, filename)
                x = self.scorer.prepare(frames)
        except BaseException as e:  # noqa: BLE001  (the request's coroutine re-raises it)
            resolve_soon(loop, fut, error=e)
            return
        finally:
            with self._preparing_lock:
                self.preparing -= 1
        frames = [Frame(_NO_PIXELS, f.time_s) for f in frames]  # drop the pixels early
        is_video = len(frames) > 1

        def done(q: np.ndarray, t: np.ndarray) -> None:
            resolve_soon(loop, fut, self.scorer.scores(frames, q, t, is_video=is_video))

        def fail(e: BaseException) -> None:
            # NOTE: past decoding, an error is the model's (a 500), never the upload's (a 4xx).
            err = e if isinstance(e, RuntimeError) else ModelError(f"{type(e).__name__}: {e}")
            resolve_soon(loop, fut, error=err)

        try:
            if self.batcher:
                self.batcher.put(x, done, fail)
            else:
                self.metrics.batch_size.observe(len(x))
                done(*run_in_buckets(self.scorer.onnx.run, x, self.buckets))
        except BaseException as e:  # noqa: BLE001
            fail(e)

    async def score(self, data: bytes, filename: str | None = None) -> dict[str, Any]:
        """Scores for one admitted creative; ``MediaError`` for bad input."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._preparing_lock:
            self.preparing += 1
        try:
            self.pool.submit(self._work, data, filename, loop, fut)
        except RuntimeError as e:  # the pool was shut down under us
            with self._preparing_lock:
                self.preparing -= 1
            if self.closing:
                raise QueueFull("the model was replaced while this request waited, retry") from e
            raise
        try:
            return await fut
        except MediaLimitError:
            self.metrics.decode_failures.labels("limit").inc()
            raise
        except (MediaError, ValueError):
            self.metrics.decode_failures.labels("undecodable").inc()
            raise
        except RuntimeError as e:  # the model or batcher closed under a request that outlived close()'s grace
            if self.closing:
                raise QueueFull("the model was replaced while this request waited, retry") from e
            raise
