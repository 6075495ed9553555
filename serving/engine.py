"""The scoring engine behind the routes: admission, a decode pool, the batcher, one model.

A request is *admitted* (or refused with ``QueueFull`` -> 503 + Retry-After) before its
body is read; its creative is decoded and preprocessed on a pool sized to the machine
(which also bounds how many decodes run at once), and the same decode thread hands the
prepared frames to the dynamic batcher's model thread (or, with batching off, runs the
model itself, as the in-process ``Scorer`` does). The Scores are built where the model
ran, and the request's coroutine is woken once, with them: the event loop does HTTP and
nothing else. A reload builds a new engine beside the old one and swaps; the old one
finishes what it admitted, then closes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from creative_qa.media import Frame, MediaError, MediaLimitError, decode_pixels
from creative_qa.scorer import Scorer
from serving.batcher import Batcher, resolve_soon, run_in_buckets
from serving.metrics import Metrics
from serving.settings import Settings

log = logging.getLogger(__name__)

GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


def batching_on(settings: Settings, providers: list[str]) -> bool:
    """Dynamic batching for a model served by ``providers``: the setting, or (auto) on a GPU only."""
    return settings.batching if settings.batching is not None else bool(GPU_PROVIDERS & set(providers))


class PixelBudget:
    """At most ``total`` pixels of still images being decoded at once, whatever the thread count.

    Decode threads outnumber the cores (a thread waiting for the GIL leaves its core to one that
    decodes); this keeps what they hold bounded: a creative takes its header's pixel count
    (at most ``total``, so a giant one runs alone) and waits while the others would exceed it.
    """

    def __init__(self, total: int):
        self.total, self.used = max(1, total), 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, pixels: int):
        n = min(max(0, pixels), self.total)
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.total)
            self.used += n
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


class QueueFull(Exception):
    """The engine holds ``max_queue`` creatives already."""


def load_scorer(settings: Settings, model: str | None = None) -> Scorer:
    """The model named by ``model`` (default: the settings'), with the serving thread count and limits."""
    providers = [p.strip() for p in settings.providers.split(",")] if settings.providers else None
    return Scorer.load(
        model or settings.model,
        providers=providers,
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
        pad = settings.pad_to_buckets
        if pad is None:
            pad = bool(GPU_PROVIDERS & set(scorer.onnx.providers))
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

    def _prepared(self) -> None:
        with self._preparing_lock:
            self.preparing -= 1

    def _work(self, data: bytes, filename: str | None, loop: asyncio.AbstractEventLoop, fut: asyncio.Future) -> None:
        """On a decode thread: decode, preprocess, then batch (or run) and settle ``fut`` with the Scores."""
        try:
            with self.pixels.reserve(decode_pixels(data, filename, self.scorer.decode_min_side)):
                frames = self.scorer.decode(data, filename)
                x = self.scorer.prepare(frames)
        except BaseException as e:  # noqa: BLE001  (the request's coroutine re-raises it)
            self._prepared()
            resolve_soon(loop, fut, error=e)
            return
        self._prepared()
        frames = [Frame(_NO_PIXELS, f.time_s) for f in frames]  # drop the pixels early
        is_video = len(frames) > 1

        def done(q: np.ndarray, t: np.ndarray) -> None:
            resolve_soon(loop, fut, self.scorer.scores(frames, q, t, is_video=is_video))

        def fail(e: BaseException) -> None:
            resolve_soon(loop, fut, error=e)

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
            self._prepared()
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
