"""The view-cache build worker: decode + preprocess a chunk of creatives into the shared store.

Kept free of torch on purpose: the cache is built in spawned processes, and each
imports only this module, NumPy and ``creative_qa``.
"""

from __future__ import annotations

import numpy as np

from creative_qa.media import MediaError, load_frame
from creative_qa.preprocess import PreprocessSpec, preprocess


def fill_rows(
    store: str, shape: tuple[int, ...], offset: int, paths: list[str], start: int, spec: dict, pool: int
) -> list[tuple[int, str | None]]:
    """Write rows ``start..start+len(paths)`` of the store; ``[(row, error or None)]``."""
    s = PreprocessSpec.from_dict(spec)
    arr = np.memmap(store, dtype=np.uint8, mode="r+", offset=offset, shape=shape)
    out: list[tuple[int, str | None]] = []
    for j, p in enumerate(paths):
        i = start + j
        try:
            arr[i] = preprocess(load_frame(p), s, pool=pool)
            out.append((i, None))
        except (MediaError, ValueError) as e:
            out.append((i, str(e)))
    arr.flush()
    del arr
    return out
