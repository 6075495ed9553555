"""Datasets: manifests in, model-ready uint8 views out, bad files logged and skipped.

Each creative is decoded once (a video contributes its middle frame) and run
through ``creative_qa.preprocess``, the same function the ONNX scorer uses, so
training sees exactly what serving will. Next to the served views, ``pool`` further
detail windows of each creative are kept for strong views (``training.augment.strong``).
Everything is cached in memory as uint8 (``4 x 64 x 64 x 3`` is 48 KB a creative),
which keeps CPU epochs fast.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
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


def load_views(
    paths: list[str], spec: PreprocessSpec, desc: str = "load", pool: int = 0
) -> tuple[np.ndarray, np.ndarray, LoadReport]:
    """Decode and preprocess creatives -> ``(N_ok, V + pool, S, S, 3)`` uint8 and the indices that loaded."""
    report = LoadReport(total=len(paths))
    pool = pool if spec.crops else 0
    views, ok = [], []
    for i, p in enumerate(tqdm(paths, desc=desc, unit="file", leave=False, disable=len(paths) < 200)):
        try:
            views.append(preprocess(load_frame(p), spec, pool=pool))
            ok.append(i)
        except (MediaError, ValueError) as e:
            report.skipped.append((p, str(e)))
            log.warning("skipping %s: %s", p, e)
    report.loaded = len(ok)
    shape = (0, spec.views + pool, spec.input_size, spec.input_size, 3)
    arr = np.stack(views) if views else np.zeros(shape, dtype=np.uint8)
    return arr, np.asarray(ok, dtype=np.int64), report


class CreativeDataset(Dataset):
    """Cached views with labels ``(T,)`` (NaN = unknown) and quality (NaN = unknown).

    ``views`` are what the scorer sees ``(N, V, S, S, 3)``; ``pool`` holds further detail
    windows ``(N, P, S, S, 3)`` (``P`` may be 0) that only strong views use.
    """

    def __init__(
        self,
        views: np.ndarray,
        labels: np.ndarray,
        quality: np.ndarray,
        paths: list[str],
        pool: np.ndarray | None = None,
    ):
        assert len(views) == len(labels) == len(quality) == len(paths)
        self.views = torch.from_numpy(views)
        if pool is None:
            pool = np.zeros((len(views), 0, *views.shape[2:]), dtype=np.uint8)
        self.pool = torch.from_numpy(pool)
        self.labels = torch.from_numpy(labels.astype(np.float32))
        self.quality = torch.from_numpy(quality.astype(np.float32))
        self.paths = paths
        self.index = torch.arange(len(paths))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "images": self.views[i],
            "crop_pool": self.pool[i],
            "labels": self.labels[i],
            "quality": self.quality[i],
            "index": self.index[i],
        }

    def subset(self, idx: np.ndarray) -> CreativeDataset:
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        return CreativeDataset(
            self.views[idx_t].numpy(),
            self.labels[idx_t].numpy(),
            self.quality[idx_t].numpy(),
            [self.paths[int(i)] for i in idx],
            self.pool[idx_t].numpy(),
        )


def load_manifest_dataset(
    source: str, tags: list[str], spec: PreprocessSpec, limit: int | None = None, desc: str = "load", pool: int = 0
) -> tuple[CreativeDataset, LoadReport]:
    """A labeled (or unlabeled: all-NaN labels) manifest or folder as a cached dataset.

    ``pool``: further detail windows kept per creative for strong views (training sets only).
    """
    df = read_manifest(source)
    if limit is not None:
        df = df.iloc[:limit]
    labels, quality = label_matrix(df, tags), quality_vector(df)
    paths = df["abspath"].tolist()
    arr, ok, report = load_views(paths, spec, desc=desc, pool=pool)
    if report.skipped:
        log.warning("%s: %s", source, report.summary())
    v = spec.views
    views, pool_views = np.ascontiguousarray(arr[:, :v]), np.ascontiguousarray(arr[:, v:])
    ds = CreativeDataset(views, labels[ok], quality[ok], [paths[i] for i in ok], pool_views)
    return ds, report
