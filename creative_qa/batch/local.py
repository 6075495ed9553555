"""The local engine: worker processes decode and preprocess, onnxruntime runs here."""

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from creative_qa.batch.store import RowBuffer
from creative_qa.batch.table import score_prepared
from creative_qa.batch.worker import Prepared, init_worker, prepare, prepare_chunk, ready
from creative_qa.scorer import Scorer

log = logging.getLogger(__name__)


class WorkerPool:
    """The decode processes, started at once (they need no model, so they start while it loads); restartable."""

    def __init__(self, workers: int, task: Callable[..., list[Prepared]] = prepare_chunk):
        self.workers, self.task = workers, task
        self.pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # NOTE: spawn, never fork: forking a process that holds onnxruntime's threads is unsafe.
        pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=init_worker,
                                   initargs=(os.getpid(),))  # fmt: skip
        for _ in range(self.workers):
            pool.submit(ready)
        return pool

    def submit(self, items: list[dict[str, Any]], spec: dict[str, Any], max_frames: int) -> Future:
        return self.pool.submit(self.task, items, spec, max_frames)

    def restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._start()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def run_local(
    scorer: Scorer,
    chunks: Iterator[list[dict[str, Any]]],
    out: RowBuffer,
    pool: WorkerPool | None,
    batch_size: int,
    prefetch: int = 4,
) -> None:
    """Score ``chunks`` of input rows into ``out``: the pool's processes prepare them (no pool: this process), ORT here.

    At most ``prefetch * workers`` chunks are in flight; results are consumed in input order. A worker that
    dies (a decoder crash, the OOM killer) takes the chunks in flight with it: they are redone one creative
    at a time on a fresh pool, and the creative that kills its worker again gets an error row.
    """
    pending: list[Prepared] = []
    frames = 0

    def consume(prepared: list[Prepared]) -> None:
        nonlocal pending, frames
        pending.extend(prepared)
        frames += sum(len(p.views) for p in prepared if p.views is not None)
        if frames >= batch_size:
            out.add(score_prepared(scorer, pending, batch_size))
            pending, frames = [], 0

    if pool is None:
        for items in chunks:
            consume([prepare(it, scorer.spec, scorer.max_frames) for it in items])
    else:
        spec = scorer.spec.to_dict()
        window: deque[tuple[list[dict[str, Any]], Future]] = deque()

        def submit() -> None:
            items = next(chunks, None)
            if items is not None:
                window.append((items, pool.submit(items, spec, scorer.max_frames)))

        def alone(item: dict[str, Any]) -> Prepared:
            try:
                return pool.submit([item], spec, scorer.max_frames).result()[0]
            except BrokenProcessPool:
                log.error("%s crashed its decode worker; it gets an error row", item["abspath"])
                pool.restart()
                return Prepared(item, None, "the decoder crashed on this file (its worker process died)")

        for _ in range(max(1, prefetch * pool.workers)):
            submit()
        while window:
            items, fut = window.popleft()
            try:
                prepared = fut.result()
            except BrokenProcessPool:
                lost = [items] + [it for it, _ in window]
                window.clear()
                log.warning("a decode worker died; redoing the %d chunks in flight one creative at a time", len(lost))
                pool.restart()
                for chunk in lost:
                    consume([alone(it) for it in chunk])
                for _ in range(max(1, prefetch * pool.workers)):
                    submit()
                continue
            submit()
            consume(prepared)
    if pending:
        out.add(score_prepared(scorer, pending, batch_size))
