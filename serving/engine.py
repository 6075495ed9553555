"""The scoring engine behind the routes: admission, a decode pool, the batcher, one model.

A request is *admitted* (or refused with ``QueueFull`` -> 503 + Retry-After) before its
body is read; its creative is decoded and preprocessed on a pool sized to the machine
(which also bounds how many decodes run at once), its prepared frames go through the
dynamic batcher (or straight to the model when batching is off), and the Scores come
back. A reload builds a new engine beside the old one and swaps; the old one finishes
what it admitted, then closes.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from creative_qa.media import Frame, MediaError, MediaLimitError
from creative_qa.scorer import Scorer
from serving.batcher import Batcher, run_in_buckets
from serving.metrics import Metrics
from serving.settings import Settings

log = logging.getLogger(__name__)

GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


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
        pad = settings.pad_to_buckets
        if pad is None:
            pad = bool(GPU_PROVIDERS & set(scorer.onnx.providers))
        self.buckets = settings.buckets if pad else None
        self.batcher: Batcher | None = None
        if settings.batching:
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

    def _prepare(self, data: bytes, filename: str | None) -> tuple[list[Frame], np.ndarray]:
        frames = self.scorer.decode(data, filename)
        x = self.scorer.prepare(frames)
        return [Frame(_NO_PIXELS, f.time_s) for f in frames], x  # drop the pixels early

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return run_in_buckets(self.scorer.onnx.run, x, self.buckets)

    async def score(self, data: bytes, filename: str | None = None) -> dict[str, Any]:
        """Scores for one admitted creative; ``MediaError`` for bad input."""
        loop = asyncio.get_running_loop()
        self.preparing += 1
        try:
            frames, x = await loop.run_in_executor(self.pool, self._prepare, data, filename)
        except RuntimeError as e:
            if self.closing:
                raise QueueFull("the model was replaced while this request waited, retry") from e
            raise
        except MediaLimitError:
            self.metrics.decode_failures.labels("limit").inc()
            raise
        except (MediaError, ValueError):
            self.metrics.decode_failures.labels("undecodable").inc()
            raise
        finally:
            self.preparing -= 1
        try:
            if self.batcher:
                q, t = await self.batcher.submit(x)
            else:
                self.metrics.batch_size.observe(len(x))
                q, t = await loop.run_in_executor(self.pool, self._run, x)
        except RuntimeError as e:  # closed under a request that outlived close()'s grace period
            if self.closing:
                raise QueueFull("the model was replaced while this request waited, retry") from e
            raise
        return self.scorer.scores(frames, q, t, is_video=len(frames) > 1)
