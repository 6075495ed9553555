"""The view-cache build worker: decode + preprocess a chunk of creatives into the shared store.

Kept free of torch on purpose: the cache is built in spawned processes, and each
imports only this module, NumPy and ``creative_qa``.
"""

from __future__ import annotations

import numpy as np

from creative_qa.media import MediaError, decode_file, load_frame
from creative_qa.preprocess import PreprocessSpec, preprocess


def fill_rows(
    store: str,
    shape: tuple[int, ...],
    offset: int,
    paths: list[str],
    start: int,
    spec: dict,
    pool: int,
    frames: int = 0,
) -> list[tuple[int, str | None, int]]:
    """Write rows ``start..start+len(paths)`` of the store; ``[(row, error or None, frames written)]``.

    ``frames=0``: one row per creative, its middle frame (``shape`` ``(N, K, S, S, 3)``).
    ``frames=F``: up to ``F`` frames sampled as the scorer samples them (``shape`` ``(N, F, K, S, S, 3)``).
    """
    s = PreprocessSpec.from_dict(spec)
    arr = np.memmap(store, dtype=np.uint8, mode="r+", offset=offset, shape=shape)
    out: list[tuple[int, str | None, int]] = []
    for j, p in enumerate(paths):
        i = start + j
        try:
            if frames:
                decoded = decode_file(p, max_frames=frames)
                for f, frame in enumerate(decoded[:frames]):
                    arr[i, f] = preprocess(frame.source, s, pool=pool)
                out.append((i, None, min(len(decoded), frames)))
            else:
                arr[i] = preprocess(load_frame(p), s, pool=pool)
                out.append((i, None, 1))
        except (MediaError, ValueError) as e:
            out.append((i, str(e), 0))
    arr.flush()
    del arr
    return out
