"""Datasets: manifests in, model-ready uint8 views out, bad files logged and skipped.

Each creative is decoded once (a video contributes its middle frame) and run
through ``creative_qa.preprocess``, the same function the ONNX scorer uses, so
training sees exactly what serving will. Next to the served views, ``pool`` further
detail windows of each creative are kept for strong views (``training.augment.strong``).

Where the views live:

* **the on-disk view cache** (the default, ``data.cache``): each split is decoded and
  preprocessed once, in parallel worker processes, into one ``.npy`` file under
  ``<home>/cache/``, keyed by every file's identity (path, size, mtime), the
  preprocessing spec and the pool size, so reruns, benchmark arms and resumed runs
  reuse it. Rows are read with ``pread`` (not ``mmap``: mapped pages count as the
  process's resident memory), so resident memory does not grow with the data set.
* **in RAM** (``data.cache=off``): decoded in this process, held as one array.

Either way ``CreativeDataset.views`` and ``.pool`` index like tensors (an int, a slice
or an index array gives a uint8 tensor).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from creative_qa.machine import cpu_count
from creative_qa.manifest import label_matrix, quality_vector, read_manifest
from creative_qa.media import MediaError, is_video_path, load_frame
from creative_qa.preprocess import VIEWS_VERSION, PreprocessSpec, preprocess
from training.cache_worker import fill_rows

log = logging.getLogger(__name__)
CACHE_VERSION = 1
CHUNK = 64  # creatives per worker task


@dataclass
class LoadReport:
    total: int = 0
    loaded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    cache: str | None = None  # the cache folder used, if any
    cache_hit: bool = False
    frame_counts: np.ndarray | None = None  # frames per creative, for a store of video frames

    def summary(self) -> str:
        return f"{self.loaded}/{self.total} creatives loaded, {len(self.skipped)} skipped"


def load_views(
    paths: list[str], spec: PreprocessSpec, desc: str = "load", pool: int = 0
) -> tuple[np.ndarray, np.ndarray, LoadReport]:
    """Decode and preprocess creatives in RAM -> ``(N_ok, V + pool, S, S, 3)`` uint8 and the indices that loaded."""
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


# --- views, in RAM or on disk ---------------------------------------------------------------


class ViewStore:
    """Rows of uint8 views ``(N, K, S, S, 3)``, indexed like a tensor.

    Backed by an in-RAM array, or by a ``.npy`` file read row by row with ``os.pread``
    (``cols`` picks a contiguous range of the file's views: served views or the pool).
    Picklable, so DataLoader workers each open the file themselves.
    """

    def __init__(
        self,
        array: np.ndarray | None = None,
        file: str | None = None,
        file_shape: tuple[int, ...] | None = None,
        offset: int = 0,
        rows: np.ndarray | None = None,
        cols: tuple[int, int] | None = None,
    ):
        if (array is None) == (file is None):
            raise ValueError("ViewStore needs exactly one of array, file")
        self.array, self.file, self.offset = array, file, offset
        self.file_shape = tuple(array.shape if array is not None else file_shape)  # type: ignore[arg-type]
        self.cols = cols or (0, self.file_shape[1])
        self.rows = np.arange(self.file_shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        self._fd: int | None = None
        self._fd_pid: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), self.cols[1] - self.cols[0], *self.file_shape[2:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_fd": None, "_fd_pid": None}

    def take(self, idx: np.ndarray, cols: tuple[int, int] | None = None) -> ViewStore:
        """A store over some rows (and optionally a column range) of this one; nothing is copied."""
        c0, c1 = cols or (0, self.cols[1] - self.cols[0])
        return ViewStore(
            self.array,
            self.file,
            self.file_shape,
            self.offset,
            self.rows[np.asarray(idx, dtype=np.int64)],
            (self.cols[0] + c0, self.cols[0] + c1),
        )

    def _read(self, rows: np.ndarray) -> np.ndarray:
        k0, k1 = self.cols
        if self.array is not None:
            return self.array[rows, k0:k1]
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd, self._fd_pid = os.open(self.file, os.O_RDONLY), os.getpid()  # type: ignore[arg-type]
        view_bytes = int(np.prod(self.file_shape[2:]))
        row_bytes = view_bytes * self.file_shape[1]
        n = (k1 - k0) * view_bytes
        out = np.empty((len(rows), k1 - k0, *self.file_shape[2:]), dtype=np.uint8)
        flat = out.reshape(len(rows), -1)
        for j, r in enumerate(rows):
            buf = os.pread(self._fd, n, self.offset + int(r) * row_bytes + k0 * view_bytes)
            if len(buf) != n:
                raise OSError(f"{self.file}: short read at row {r} (cache file truncated?)")
            flat[j] = np.frombuffer(buf, dtype=np.uint8)
        return out

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            return torch.from_numpy(np.ascontiguousarray(self._read(self.rows[[int(key)]])[0]))
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return torch.from_numpy(np.ascontiguousarray(self._read(self.rows[key])))

    def numpy(self) -> np.ndarray:
        return self._read(self.rows)

    def __del__(self) -> None:
        if self._fd is not None and self._fd_pid == os.getpid():
            os.close(self._fd)


@dataclass
class VideoFrames:
    """Up to ``per`` sampled frames of each video of a dataset: ``views``/``pool`` rows ``slot * per + f``."""

    views: ViewStore
    pool: ViewStore
    per: int
    slot: np.ndarray  # (N,) the creative's slot in the stores, -1 = not a video
    count: np.ndarray  # (N,) frames it has

    def take(self, idx: np.ndarray) -> VideoFrames:
        return VideoFrames(self.views, self.pool, self.per, self.slot[idx], self.count[idx])


class CreativeDataset(Dataset):
    """Views with labels ``(T,)`` (NaN = unknown) and quality (NaN = unknown).

    ``views`` are what the scorer sees ``(N, V, S, S, 3)``; ``pool`` holds further detail
    windows ``(N, P, S, S, 3)`` (``P`` may be 0) that only strong views use. Both are
    ``ViewStore``s (or arrays, wrapped into one).
    """

    def __init__(
        self,
        views: np.ndarray | ViewStore,
        labels: np.ndarray,
        quality: np.ndarray,
        paths: list[str],
        pool: np.ndarray | ViewStore | None = None,
        frames: VideoFrames | None = None,
    ):
        assert len(views) == len(labels) == len(quality) == len(paths)
        self.views = views if isinstance(views, ViewStore) else ViewStore(np.ascontiguousarray(views))
        if pool is None:
            pool = np.zeros((len(views), 0, *self.views.shape[2:]), dtype=np.uint8)
        self.pool = pool if isinstance(pool, ViewStore) else ViewStore(np.ascontiguousarray(pool))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        self.quality = torch.from_numpy(np.asarray(quality, dtype=np.float32))
        self.paths = paths
        self.index = torch.arange(len(paths))
        self.frames = frames  # every sampled frame of the videos, for multiple-instance training

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

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (the DataLoader calls this with ``collate_fn=keep_batch``)."""
        rows = np.asarray(idx, dtype=np.int64)
        out = {
            "images": self.views[rows],
            "crop_pool": self.pool[rows],
            "labels": self.labels[rows],
            "quality": self.quality[rows],
            "index": self.index[rows],
        }
        return out if self.frames is None else self._with_frames(rows, out)

    def _with_frames(self, rows: np.ndarray, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each video's row replaced by its sampled frames; ``bag`` maps image rows to batch rows.

        ``images``/``crop_pool`` then have ``R >= B`` rows while labels, quality and index keep ``B``:
        ``CreativeModel.frame_bags`` pools a video's frames back into one prediction.
        """
        fr = self.frames
        assert fr is not None
        slots, counts = fr.slot[rows], fr.count[rows]
        if not ((slots >= 0) & (counts > 1)).any():
            return out
        images, pools, bag = [], [], []
        for b, (sl, c) in enumerate(zip(slots, counts, strict=True)):
            if sl >= 0 and c > 1:
                f = np.arange(sl * fr.per, sl * fr.per + c)
                images.append(fr.views[f])
                pools.append(fr.pool[f])
                bag += [b] * int(c)
            else:
                images.append(out["images"][b : b + 1])
                pools.append(out["crop_pool"][b : b + 1])
                bag.append(b)
        return out | {"images": torch.cat(images), "crop_pool": torch.cat(pools), "bag": torch.tensor(bag)}

    def subset(self, idx: np.ndarray) -> CreativeDataset:
        idx = np.asarray(idx, dtype=np.int64)
        return CreativeDataset(
            self.views.take(idx),
            self.labels.numpy()[idx],
            self.quality.numpy()[idx],
            [self.paths[int(i)] for i in idx],
            self.pool.take(idx),
            self.frames.take(idx) if self.frames is not None else None,
        )


def keep_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``collate_fn`` for datasets that batch themselves (``__getitems__``)."""
    return batch


# --- the on-disk view cache --------------------------------------------------------------


def _file_identity(path: str) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
        return (path, st.st_size, st.st_mtime_ns)
    except OSError:
        return (path, -1, -1)


def cache_key(paths: list[str], spec: PreprocessSpec, pool: int, frames: int = 0) -> str:
    """Content key of a split's cache: every file's identity, the preprocessing spec, the pool size
    (and for a store of video frames, how many frames)."""
    h = hashlib.sha256()
    head = {"version": CACHE_VERSION, "views": VIEWS_VERSION, "spec": spec.to_dict(), "pool": pool, "frames": frames}
    h.update(json.dumps(head, sort_keys=True).encode())
    for ident in map(_file_identity, paths):
        h.update(json.dumps(ident).encode())
    return h.hexdigest()[:24]


def build_view_cache(
    paths: list[str],
    spec: PreprocessSpec,
    pool: int,
    root: Path,
    workers: int = 0,
    desc: str = "cache",
    frames: int = 0,
) -> tuple[ViewStore, np.ndarray, LoadReport]:
    """The split's views on disk (built now unless a cache with the same key exists).

    Returns the store over the rows that loaded, their indices in ``paths`` and a report.
    ``workers``: decoding processes (0 = one per CPU, 1 = in this process). ``frames=F``:
    a store of up to F sampled frames per creative (videos), ``(N * F, K, S, S, 3)``,
    whose per-creative frame counts are in ``report.frame_counts``.
    """
    pool = pool if spec.crops else 0
    root.mkdir(parents=True, exist_ok=True)
    folder = root / cache_key(paths, spec, pool, frames)
    report = LoadReport(total=len(paths), cache=str(folder))
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        _build(folder, paths, spec, pool, workers, desc, frames)
    else:
        report.cache_hit = True
        log.info("%s: reusing view cache %s", desc, folder)
    meta = json.loads(meta_path.read_text())
    ok = np.asarray(meta["ok"], dtype=np.int64)
    report.loaded = len(ok)
    report.skipped = [(p, r) for p, r in meta["skipped"]]
    for p, r in report.skipped:
        log.warning("skipping %s: %s", p, r)
    shape = tuple(meta["shape"])
    if frames:  # (N, F, K, ...) read as N * F rows
        report.frame_counts = np.asarray(meta["counts"], dtype=np.int64)
        shape = (shape[0] * shape[1], *shape[2:])
    store = ViewStore(file=str(folder / "views.npy"), file_shape=shape, offset=meta["offset"])
    return (store if frames else store.take(ok)), ok, report


def _build(
    folder: Path, paths: list[str], spec: PreprocessSpec, pool: int, workers: int, desc: str, frames: int = 0
) -> None:
    shape: tuple[int, ...] = (len(paths), spec.views + pool, spec.input_size, spec.input_size, 3)
    if frames:
        shape = (shape[0], frames, *shape[1:])
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        arr = np.lib.format.open_memmap(tmp / "views.npy", mode="w+", dtype=np.uint8, shape=shape)
        offset = int(arr.offset)
        del arr
        store, spec_d = str(tmp / "views.npy"), spec.to_dict()
        chunks = [(i, paths[i : i + CHUNK]) for i in range(0, len(paths), CHUNK)]
        workers = workers or cpu_count()
        results: list[tuple[int, str | None, int]] = []
        bar = tqdm(total=len(paths), desc=f"{desc} cache", unit="file", leave=False, disable=len(paths) < 200)
        if workers <= 1 or len(chunks) <= 1:
            for start, part in chunks:
                results += fill_rows(store, shape, offset, part, start, spec_d, pool, frames)
                bar.update(len(part))
        else:
            # NOTE: spawn, not fork: the parent holds torch's thread pools, which do not survive a fork.
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
                futs = [
                    ex.submit(fill_rows, store, shape, offset, part, start, spec_d, pool, frames)
                    for start, part in chunks
                ]
                for f in as_completed(futs):
                    part_results = f.result()
                    results += part_results
                    bar.update(len(part_results))
        bar.close()
        results.sort()
        meta = {
            "shape": list(shape),
            "offset": offset,
            "ok": [i for i, err, _ in results if err is None],
            "skipped": [(paths[i], err) for i, err, _ in results if err is not None],
            "counts": [n for _, _, n in results],
            "spec": spec_d,
            "pool": pool,
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            tmp.rename(folder)  # atomic: a concurrent builder of the same key wins or loses whole
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
            log.info("%s: another process built %s first", desc, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_manifest_dataset(
    source: str,
    tags: list[str],
    spec: PreprocessSpec,
    limit: int | None = None,
    desc: str = "load",
    pool: int = 0,
    cache: Path | None = None,
    workers: int = 0,
    video_frames: int = 1,
    labels_of: Callable[[pd.DataFrame], np.ndarray] | None = None,
) -> tuple[CreativeDataset, LoadReport]:
    """A labeled (or unlabeled: all-NaN labels) manifest or folder as a dataset.

    ``pool``: further detail windows kept per creative for strong views (training sets only).
    ``cache``: the view-cache folder (None = decode into RAM); ``workers``: its build processes.
    ``video_frames > 1``: also keep up to that many sampled frames of every video (``.frames``).
    ``labels_of`` reads the label matrix (e.g. migrating a manifest of an older taxonomy);
    the default reads the ``tags`` columns.
    """
    df = read_manifest(source)
    if limit is not None:
        df = df.iloc[:limit]
    labels = labels_of(df) if labels_of is not None else label_matrix(df, tags)
    quality = quality_vector(df)
    paths = df["abspath"].tolist()
    v = spec.views
    if cache is not None:
        store, ok, report = build_view_cache(paths, spec, pool, Path(cache), workers, desc)
        k = store.shape[1]
        views, pool_views = store.take(np.arange(len(store)), (0, v)), store.take(np.arange(len(store)), (v, k))
    else:
        arr, ok, report = load_views(paths, spec, desc=desc, pool=pool)
        views, pool_views = np.ascontiguousarray(arr[:, :v]), np.ascontiguousarray(arr[:, v:])
    if report.skipped:
        log.warning("%s: %s", source, report.summary())
    kept = [paths[i] for i in ok]
    frames = _video_frames(kept, spec, pool, cache, workers, video_frames, desc) if video_frames > 1 else None
    ds = CreativeDataset(views, labels[ok], quality[ok], kept, pool_views, frames)
    return ds, report


def _video_frames(
    paths: list[str], spec: PreprocessSpec, pool: int, cache: Path | None, workers: int, per: int, desc: str
) -> VideoFrames | None:
    vids = [i for i, p in enumerate(paths) if is_video_path(p)]
    if not vids:
        return None
    pool = pool if spec.crops else 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(cache) if cache is not None else Path(tmp)
        store, _, rep = build_view_cache([paths[i] for i in vids], spec, pool, root, workers, f"{desc} frames", per)
        if cache is None:  # in RAM, like the views
            store = ViewStore(store.numpy().copy())
    assert rep.frame_counts is not None
    slot = np.full(len(paths), -1, dtype=np.int64)
    count = np.zeros(len(paths), dtype=np.int64)
    slot[vids], count[vids] = np.arange(len(vids)), rep.frame_counts
    v, k = spec.views, store.shape[1]
    every = np.arange(len(store))
    log.info("%s: %d videos, %.1f frames each on average", desc, len(vids), float(count[vids].mean()))
    return VideoFrames(store.take(every, (0, v)), store.take(every, (v, k)), per, slot, count)


# --- data order: deterministic, resumable, sharded over ranks ----------------------------------


def _perm(n: int, *seed: int) -> np.ndarray:
    return np.random.default_rng(list(seed)).permutation(n)


def epoch_batches(
    n: int, batch_size: int, steps: int | None, seed: int, epoch: int, world: int = 1, rank: int = 0
) -> list[np.ndarray]:
    """This rank's batches of one epoch, a pure function of its arguments (so resume can skip ahead).

    The epoch is ``steps`` global batches of ``batch_size * world`` creatives (``None``: one pass),
    drawn from passes over a fresh permutation each (the last short batch of a pass dropped);
    rank ``r`` gets slice ``r`` of each global batch, so N ranks see exactly what one process
    with an N-times larger batch would.
    """
    gb = min(batch_size * world, n)
    if gb < world:
        raise ValueError(f"{n} training creatives cannot feed {world} ranks")
    per_pass = max(1, n // gb)
    steps = per_pass if steps is None else steps
    out: list[np.ndarray] = []
    p = 0
    while len(out) < steps:
        perm = _perm(n, seed, epoch, p)
        for b in range(min(per_pass, steps - len(out))):
            g = perm[b * gb : (b + 1) * gb]
            share = len(g) // world
            out.append(g[rank * share : (rank + 1) * share])
        p += 1
    return out


def steps_in_epoch(n: int, batch_size: int, world: int = 1) -> int:
    return max(1, n // min(batch_size * world, n))


class StreamBatches:
    """Endless batches of the unlabeled pool for steps ``start, start+1, ...``: step ``s``'s batch
    is a pure function of ``s``, so a resumed run draws the same unlabeled batches."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, world: int = 1, rank: int = 0):
        self.n, self.seed, self.start, self.world, self.rank = n, seed, start, world, rank
        self.gb = max(world, min(batch_size * world, n))
        self.per_pass = max(1, n // self.gb)

    def __iter__(self) -> Iterator[np.ndarray]:
        step, cached = self.start, (-1, None)
        while True:
            p, b = divmod(step, self.per_pass)
            if cached[0] != p:
                cached = (p, _perm(self.n, self.seed, p))
            g = cached[1][b * self.gb : (b + 1) * self.gb]
            share = len(g) // self.world
            yield g[self.rank * share : (self.rank + 1) * share]
            step += 1
