"""Datasets: manifests in, model-ready uint8 views out, bad files logged and skipped.

Each creative is decoded once (a video contributes its middle frame) and run
through ``creative_qa.preprocess``, the same function the ONNX scorer uses, so
training sees exactly what serving will. The views are cached in memory as uint8
(``3 x 128 x 128 x 3`` is 147 KB a creative), which keeps CPU epochs fast.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from creative_qa.manifest import label_matrix, quality_vector, read_manifest
from creative_qa.media import MediaError, load_frame
from creative_qa.preprocess import PreprocessSpec, preprocess

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    total: int = 0
    loaded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def summary(self) -> str:
        return f"{self.loaded}/{self.total} creatives loaded, {len(self.skipped)} skipped"


def load_views(paths: list[str], spec: PreprocessSpec, desc: str = "load") -> tuple[np.ndarray, np.ndarray, LoadReport]:
    """Decode and preprocess creatives -> ``(N_ok, V, S, S, 3)`` uint8 and the indices that loaded."""
    report = LoadReport(total=len(paths))
    views, ok = [], []
    for i, p in enumerate(tqdm(paths, desc=desc, unit="file", leave=False, disable=len(paths) < 200)):
        try:
            views.append(preprocess(load_frame(p), spec))
            ok.append(i)
        except (MediaError, ValueError) as e:
            report.skipped.append((p, str(e)))
            log.warning("skipping %s: %s", p, e)
    report.loaded = len(ok)
    shape = (0, spec.views, spec.input_size, spec.input_size, 3)
    arr = np.stack(views) if views else np.zeros(shape, dtype=np.uint8)
    return arr, np.asarray(ok, dtype=np.int64), report


class CreativeDataset(Dataset):
    """Cached views with labels ``(T,)`` (NaN = unknown) and quality (NaN = unknown)."""

    def __init__(self, views: np.ndarray, labels: np.ndarray, quality: np.ndarray, paths: list[str]):
        assert len(views) == len(labels) == len(quality) == len(paths)
        self.views = torch.from_numpy(views)
        self.labels = torch.from_numpy(labels.astype(np.float32))
        self.quality = torch.from_numpy(quality.astype(np.float32))
        self.paths = paths
        self.index = torch.arange(len(paths))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"images": self.views[i], "labels": self.labels[i], "quality": self.quality[i], "index": self.index[i]}

    def subset(self, idx: np.ndarray) -> CreativeDataset:
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        return CreativeDataset(
            self.views[idx_t].numpy(),
            self.labels[idx_t].numpy(),
            self.quality[idx_t].numpy(),
            [self.paths[int(i)] for i in idx],
        )


def load_manifest_dataset(
    source: str,
    tags: list[str],
    spec: PreprocessSpec,
    limit: int | None = None,
    desc: str = "load",
    labels_of: Callable[[pd.DataFrame], np.ndarray] | None = None,
) -> tuple[CreativeDataset, LoadReport]:
    """A labeled (or unlabeled: all-NaN labels) manifest or folder as a cached dataset.

    ``labels_of`` reads the label matrix (e.g. migrating a manifest of an older taxonomy);
    the default reads the ``tags`` columns.
    """
    df = read_manifest(source)
    if limit is not None:
        df = df.iloc[:limit]
    labels = labels_of(df) if labels_of is not None else label_matrix(df, tags)
    quality = quality_vector(df)
    paths = df["abspath"].tolist()
    views, ok, report = load_views(paths, spec, desc=desc)
    if report.skipped:
        log.warning("%s: %s", source, report.summary())
    return CreativeDataset(views, labels[ok], quality[ok], [paths[i] for i in ok]), report
