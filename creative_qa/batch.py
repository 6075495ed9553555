"""Offline batch scoring: a manifest or folder in, one Parquet (or CSV) row per creative out.

Unreadable files get a row with an ``error`` and no scores; they never stop the run.
Still images are scored in batches; videos frame by frame, aggregated as in
``Scorer.score_frames``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from creative_qa.manifest import read_manifest
from creative_qa.media import MediaError, decode_file
from creative_qa.scorer import Scorer

log = logging.getLogger(__name__)


def _flat(path: str, scores: dict[str, Any] | None, error: str | None, tags: list[str], n_frames: int) -> dict:
    row: dict[str, Any] = {
        "path": path,
        "quality": np.nan,
        **{t: np.nan for t in tags},
        "flags": "",
        "n_frames": n_frames,
        "error": error,
    }
    if scores is not None:
        row["quality"] = scores["quality"]
        row |= scores["tags"]
        row["flags"] = ",".join(scores["flags"])
    return row


def score_frame_table(
    scorer: Scorer, paths: list[str], display: list[str], batch_size: int = 32, progress: bool = True
) -> pd.DataFrame:
    """Score files; returns the flat table (one row per file, ``error`` set where decoding failed)."""
    rows: list[dict | None] = [None] * len(paths)
    bar = tqdm(total=len(paths), desc="batch-score", unit="creative", disable=not progress)
    for start in range(0, len(paths), batch_size):
        pending: list[tuple[int, np.ndarray]] = []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                frames = decode_file(paths[i], scorer.max_frames)
            except MediaError as e:
                log.warning("skipping %s: %s", paths[i], e)
                rows[i] = _flat(display[i], None, str(e), scorer.tags, 0)
                continue
            if len(frames) == 1:
                pending.append((i, frames[0].pixels))
            else:
                rows[i] = _flat(display[i], scorer.score_frames(frames, is_video=True), None, scorer.tags, len(frames))
        if pending:
            try:
                quality, tags = scorer.predict([f for _, f in pending])
                for (i, _), q, t in zip(pending, quality, tags, strict=True):
                    rows[i] = _flat(display[i], scorer.result(q, t), None, scorer.tags, 1)
            except ValueError as e:  # e.g. a degenerate frame that preprocess refuses
                for i, _ in pending:
                    rows[i] = _flat(display[i], None, str(e), scorer.tags, 0)
        bar.update(min(start + batch_size, len(paths)) - start)
    bar.close()
    return pd.DataFrame(rows)


def batch_score(
    input_path: str | Path, output: str | Path, model: str | Path | Scorer, batch_size: int = 32, progress: bool = True
) -> pd.DataFrame:
    """Score every creative of a manifest or folder and write the table to ``output`` (.parquet or .csv)."""
    scorer = model if isinstance(model, Scorer) else Scorer(model)
    df = read_manifest(input_path)
    table = score_frame_table(scorer, df["abspath"].tolist(), df["path"].astype(str).tolist(), batch_size, progress)
    table["model_name"], table["model_version"] = scorer.name, scorer.version
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        table.to_csv(out, index=False)
    else:
        table.to_parquet(out, index=False)
    n_err = int(table["error"].notna().sum())
    log.info("scored %d creatives (%d errors) -> %s", len(table) - n_err, n_err, out)
    return table
