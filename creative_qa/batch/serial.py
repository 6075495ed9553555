"""The serial loop (one process, one stage after the other), for small in-process uses."""

import logging

import numpy as np
import pandas as pd
from tqdm import tqdm

from creative_qa.batch.table import flat_row
from creative_qa.media import MediaError, decode_file
from creative_qa.scorer import Scorer

log = logging.getLogger(__name__)


def score_frame_table(
    scorer: Scorer, paths: list[str], display: list[str], batch_size: int = 32, progress: bool = True
) -> pd.DataFrame:
    """Score files in this process, one stage after the other; one row per file, ``error`` where decoding failed."""
    rows: list[dict | None] = [None] * len(paths)
    bar = tqdm(total=len(paths), desc="score", unit="creative", disable=not progress)
    for start in range(0, len(paths), batch_size):
        pending: list[tuple[int, np.ndarray]] = []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                frames = decode_file(paths[i], scorer.max_frames, scorer.limits, scorer.decode_min_side)
            except MediaError as e:
                log.warning("skipping %s: %s", paths[i], e)
                rows[i] = flat_row(display[i], None, str(e), scorer.tags, 0)
                continue
            if len(frames) == 1:
                pending.append((i, frames[0].source))
            else:
                rows[i] = flat_row(
                    display[i], scorer.score_frames(frames, is_video=True), None, scorer.tags, len(frames)
                )
        if pending:
            try:
                quality, tags = scorer.predict([f for _, f in pending])
                for (i, _), q, t in zip(pending, quality, tags, strict=True):
                    rows[i] = flat_row(display[i], scorer.result(q, t), None, scorer.tags, 1)
            except ValueError as e:  # e.g. a degenerate frame that preprocess refuses
                for i, _ in pending:
                    rows[i] = flat_row(display[i], None, str(e), scorer.tags, 0)
        bar.update(min(start + batch_size, len(paths)) - start)
    bar.close()
    return pd.DataFrame(rows)


def score_manifest(scorer: Scorer, df: pd.DataFrame, progress: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """A read manifest's files scored in this process: the table, and the ``(N, T)`` tag probabilities
    with NaN rows where a file could not be scored."""
    table = score_frame_table(scorer, df["abspath"].tolist(), df["path"].tolist(), progress=progress)
    probs = table[scorer.tags].to_numpy(dtype=np.float64, copy=True)
    probs[table["error"].notna().to_numpy()] = np.nan
    return table, probs
