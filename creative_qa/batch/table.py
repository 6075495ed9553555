"""The output row: its schema, a scored creative flattened into one, and rows buffered into parts."""

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from creative_qa.batch.worker import Prepared
from creative_qa.scorer import Scorer

log = logging.getLogger(__name__)


def output_schema(tags: Sequence[str]) -> pa.Schema:
    """The batch output's columns, identical for every engine and part."""
    return pa.schema(
        [
            ("path", pa.string()),
            ("quality", pa.float64()),
            *[(t, pa.float64()) for t in tags],
            ("flags", pa.string()),
            ("n_frames", pa.int32()),
            ("error", pa.string()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("key", pa.string()),
        ]
    )


def flat_row(path: str, scores: dict[str, Any] | None, error: str | None, tags: list[str], n_frames: int) -> dict:
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


def score_prepared(scorer: Scorer, prepared: Sequence[Prepared], batch_size: int) -> list[dict[str, Any]]:
    """Rows (in the order given) for prepared creatives: one onnxruntime pass over all their frames."""
    with_views = [p for p in prepared if p.views is not None]
    outputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if with_views:
        x = np.concatenate([p.views for p in with_views])  # (sum F, V, S, S, 3)
        qs, ts = [], []
        for i in range(0, len(x), batch_size):
            q, t = scorer.onnx.run(x[i : i + batch_size])
            qs.append(q)
            ts.append(t)
        quality, tags = np.concatenate(qs), np.concatenate(ts)
        at = 0
        for p in with_views:
            n = len(p.views)
            outputs[id(p)] = (quality[at : at + n], tags[at : at + n])
            at += n
    rows = []
    for p in prepared:
        if p.views is None:
            row = flat_row(p.item["path"], None, p.error, scorer.tags, 0)
        else:
            q, t = outputs[id(p)]
            # Same aggregation as Scorer.score_frames: mean quality, a defect anywhere flags the video.
            scores = scorer.result(q[0], t[0]) if len(q) == 1 else scorer.result(float(q.mean()), t.max(axis=0))
            row = flat_row(p.item["path"], scores, None, scorer.tags, len(q))
        row |= {
            "model_name": scorer.name,
            "model_version": scorer.version,
            "size": int(p.item["size"]),
            "mtime_ns": int(p.item["mtime_ns"]),
            "key": p.item["key"],
        }
        rows.append(row)
    return rows
