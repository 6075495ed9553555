"""What a batch-score worker process runs: decode and preprocess, nothing else.

Kept apart from ``creative_qa.batch`` so a worker imports only numpy, Pillow and the media
and preprocessing modules (never onnxruntime, pandas or pyarrow), which keeps its start fast.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from creative_qa.media import MediaError, decode_file
from creative_qa.preprocess import PreprocessSpec, preprocess

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """One creative after decoding and preprocessing: its views, or why it has none."""

    item: dict[str, Any]  # the input row: path, abspath, size, mtime_ns, key
    views: np.ndarray | None  # (F, V, S, S, 3) uint8, one entry per frame
    error: str | None = None


def _stable(message: str) -> str:
    # NOTE: decoders name their buffer objects ("<_io.BytesIO object at 0x7f...>"); drop the address so the
    # same file gives the same row on every run and engine.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", message)


def prepare(item: dict[str, Any], spec: PreprocessSpec, max_frames: int) -> Prepared:
    """Decode one creative (bounded, as in serving) and preprocess every frame; errors become ``Prepared.error``."""
    try:
        # NOTE: reduced as serving decodes it: the same views, and a 60 MP still costs what the model needs.
        frames = decode_file(item["abspath"], max_frames, min_side=spec.decode_min_side)
        if not frames:
            raise MediaError("no frames to score")
        views = np.stack([preprocess(f.source, spec) for f in frames])
    except MediaError as e:
        return Prepared(item, None, _stable(str(e)))
    except ValueError as e:  # preprocess refuses a degenerate frame
        return Prepared(item, None, _stable(f"cannot preprocess: {e}"))
    except Exception as e:  # NOTE: one odd file must not end a run of a million; it gets its row.
        log.exception("unexpected error on %s", item["abspath"])
        return Prepared(item, None, _stable(f"unexpected {type(e).__name__}: {e}"))
    return Prepared(item, views)


def _watch_parent(parent: int) -> None:
    # NOTE: a SIGKILLed parent cannot tell its workers to stop; they notice and leave on their own.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def init_worker(parent: int) -> None:
    # NOTE: Ctrl-C reaches the whole process group: the parent handles it (and shuts the pool down);
    # a worker that also raised KeyboardInterrupt would print its own traceback per process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def ready() -> int:
    """A no-op task: submitting one per worker starts them all before there is work."""
    return os.getpid()


def prepare_chunk(items: list[dict[str, Any]], spec: dict[str, Any], max_frames: int) -> list[Prepared]:
    s = PreprocessSpec.from_dict(spec)
    return [prepare(it, s, max_frames) for it in items]
