"""Inputs and keys: listing a folder or manifest in chunks, each creative's key, the todo listing."""

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from creative_qa.manifest import ManifestError
from creative_qa.media import MEDIA_EXTS

log = logging.getLogger(__name__)


def _content_hash(path: str) -> str | None:
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def iter_paths(source: str | Path, chunk_rows: int) -> Iterator[list[str]]:
    """The paths a source lists, relative to it or absolute, in chunks (never the whole listing at once)."""
    src = Path(source)
    if src.is_dir():
        buf: list[str] = []
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel = os.path.relpath(root, src)
            for f in sorted(files):
                if Path(f).suffix.lower() in MEDIA_EXTS:
                    buf.append(f if rel == "." else os.path.join(rel, f))
                    if len(buf) >= chunk_rows:
                        yield buf
                        buf = []
        if buf:
            yield buf
        return
    if not src.is_file():
        raise ManifestError(f"{src}: no such manifest or folder")
    suffix = src.suffix.lower()
    if suffix == ".txt":  # one path a line; blank lines and # comments skipped
        with src.open(encoding="utf-8") as f:
            buf = []
            for line in f:
                if (p := line.strip()) and not p.startswith("#"):
                    buf.append(p)
                    if len(buf) >= chunk_rows:
                        yield buf
                        buf = []
            if buf:
                yield buf
    elif suffix in (".parquet", ".pq"):
        pf = pq.ParquetFile(src)
        if "path" not in pf.schema_arrow.names:
            raise ManifestError(
                f"{src}: the manifest has no 'path' column (columns: {', '.join(pf.schema_arrow.names)})"
            )
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=["path"]):
            yield [str(p) for p in batch.column("path").to_pylist() if p is not None]
    elif suffix in (".csv", ".tsv"):
        sep = "\t" if suffix == ".tsv" else ","
        cols = list(pd.read_csv(src, sep=sep, nrows=0).columns)
        if "path" not in cols:
            raise ManifestError(f"{src}: the manifest has no 'path' column (columns: {', '.join(map(str, cols))})")
        for chunk in pd.read_csv(src, sep=sep, usecols=["path"], dtype={"path": str}, chunksize=chunk_rows):
            yield chunk["path"].dropna().tolist()
    else:
        raise ManifestError(f"{src}: the input must be a folder, a .csv/.tsv/.parquet manifest or a .txt list of paths")


def iter_inputs(source: str | Path, content_hash: bool = False, chunk_rows: int = 8192) -> Iterator[pd.DataFrame]:
    """The creatives to score, in chunks: ``path`` (as listed), ``abspath``, ``size``, ``mtime_ns`` and ``key``.

    ``source`` is a folder (every image and video under it), a CSV/TSV/Parquet manifest with a
    ``path`` column (relative to the manifest) or a ``.txt`` file of paths. The key is the absolute
    path, size and modification time, or with ``content_hash`` the absolute path and a hash of the
    bytes. A missing file keeps its row (size -1) and is reported when scored.
    """
    src = Path(source)
    root = src if src.is_dir() else src.parent
    for paths in iter_paths(src, chunk_rows):
        absp = [os.path.abspath(p if os.path.isabs(p) else os.path.join(root, p)) for p in paths]
        sizes, mtimes = [], []
        for p in absp:
            try:
                st = os.stat(p)
                sizes.append(st.st_size)
                mtimes.append(st.st_mtime_ns)
            except OSError:
                sizes.append(-1)
                mtimes.append(-1)
        if content_hash:
            # NOTE: hashlib releases the GIL on large buffers, so threads overlap the reads.
            with ThreadPoolExecutor(max_workers=8) as ex:
                digests = list(ex.map(_content_hash, absp))
            keys = [f"{a}|{d or 'unreadable'}" for a, d in zip(absp, digests, strict=True)]
        else:
            keys = [f"{a}|{s}|{m}" for a, s, m in zip(absp, sizes, mtimes, strict=True)]
        yield pd.DataFrame(
            {
                "path": paths,
                "abspath": absp,
                "size": np.asarray(sizes, dtype=np.int64),
                "mtime_ns": np.asarray(mtimes, dtype=np.int64),
                "key": keys,
            }
        )


def list_inputs(source: str | Path, content_hash: bool = False) -> pd.DataFrame:
    """``iter_inputs`` as one frame, duplicates dropped (for small inputs and tests)."""
    chunks = list(iter_inputs(source, content_hash))
    if not chunks:
        return pd.DataFrame(columns=["path", "abspath", "size", "mtime_ns", "key"])
    return pd.concat(chunks, ignore_index=True).drop_duplicates("key").reset_index(drop=True)


def key_ids(keys: Iterable[str]) -> np.ndarray:
    """64-bit ids of resume keys: what the run keeps in memory per creative (8 bytes, not the key's string)."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little", signed=True) for k in keys),
        dtype=np.int64,
    )


def member(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """``ids[i] in sorted_ids``, by binary search."""
    if not len(sorted_ids):
        return np.zeros(len(ids), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[at] == ids


TODO_SCHEMA = pa.schema(
    [("path", pa.string()), ("abspath", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
     ("key", pa.string()), ("key_id", pa.int64())]
)  # fmt: skip


@dataclass
class Listing:
    """The inputs of a run, on disk: what is left to score (``todo``, a Parquet file) and the ids of all."""

    todo: Path
    n_todo: int
    n_inputs: int
    n_done: int
    ids: np.ndarray  # sorted unique key ids of every current input
    n_dupes: int = 0

    def chunks(self, size: int) -> Iterator[list[dict[str, Any]]]:
        """The creatives to score, ``size`` at a time, each once."""
        emitted = np.empty(0, dtype=np.int64)
        for batch in pq.ParquetFile(self.todo).iter_batches(batch_size=size):
            rows = batch.to_pylist()
            ids = np.asarray([r["key_id"] for r in rows], dtype=np.int64)
            fresh = ~member(ids, emitted) if len(emitted) else np.ones(len(ids), dtype=bool)
            if self.n_dupes:  # NOTE: only a listing with duplicates pays for remembering what was emitted
                emitted = np.union1d(emitted, ids)
            _, first = np.unique(ids, return_index=True)
            keep = np.zeros(len(ids), dtype=bool)
            keep[first] = True
            rows = [r for r, k in zip(rows, keep & fresh, strict=True) if k]
            if rows:
                yield rows


def make_listing(source: str | Path, content_hash: bool, done: np.ndarray, todo_path: Path) -> Listing:
    """Stream the source's listing to ``todo_path``, leaving out what ``done`` (sorted key ids) covers."""
    all_ids: list[np.ndarray] = []
    todo_ids: list[np.ndarray] = []
    tmp = todo_path.with_name(todo_path.name + ".tmp")
    with pq.ParquetWriter(str(tmp), TODO_SCHEMA) as w:
        for chunk in iter_inputs(source, content_hash):
            ids = key_ids(chunk["key"])
            all_ids.append(ids)
            left = ~member(ids, done)
            chunk = chunk[left].assign(key_id=ids[left])
            todo_ids.append(ids[left])
            w.write_table(pa.Table.from_pandas(chunk, schema=TODO_SCHEMA, preserve_index=False))
    os.replace(tmp, todo_path)
    every = np.concatenate(all_ids) if all_ids else np.empty(0, dtype=np.int64)
    unique = np.unique(every)
    n_todo = len(np.unique(np.concatenate(todo_ids))) if todo_ids else 0
    if len(every) > len(unique):
        log.info("%d duplicate inputs dropped (same file listed more than once)", len(every) - len(unique))
    return Listing(todo_path, n_todo, len(unique), len(unique) - n_todo, unique, n_dupes=len(every) - len(unique))
