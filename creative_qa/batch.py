"""Offline batch scoring: a folder or manifest in, one row per creative out, resumable.

    >>> batch_score("data/test.csv", "scores.parquet", "model.onnx", workers=2)

**Pipeline.** Decoding and preprocessing run in ``workers`` processes (PIL and the crop
search hold the GIL); each needs only the ``PreprocessSpec``. onnxruntime runs in this
process on batches of ``batch_size`` frames, while the workers prepare the next chunks.
At most 4 chunks per worker are in flight, so memory stays flat however large the
input; the listing itself is streamed to a file in the parts folder and only an 8-byte id
per creative is kept in memory. A worker that dies (a decoder crash) is replaced and the
creatives it held are redone one at a time; the one that kills it again gets an error row.
Videos go through the same bounded decoder as serving (``media.decode_file``)
and are aggregated as in ``Scorer.score_frames`` (mean quality, highest probability
per tag).

**Output, exactly once.** Rows are written in parts, ``<output>.parts/part-NNNNNN.parquet``,
each written under a temporary name, synced and renamed, and each holding the ``key``
of every creative it covers (absolute path, size and modification time; with
``content_hash`` the path and a BLAKE2 hash of the bytes). Rerunning the same command
reads the keys of the finished parts and scores only the rest; a kill loses at most the
rows not yet in a part. ``overwrite`` starts fresh. When every input has a row, the parts
are combined (streamed, one part at a time) into ``<output>`` (Parquet, or CSV by suffix),
and an HTML report is written next to it (``creative_qa.report``). The parts folder stays:
a later run on a grown folder scores only the new creatives.

A creative that cannot be read gets one row with its ``error`` and no scores.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from creative_qa.batch_worker import Prepared, init_worker, prepare, prepare_chunk, ready
from creative_qa.machine import cpu_count
from creative_qa.manifest import ManifestError
from creative_qa.media import MEDIA_EXTS, MediaError, decode_file
from creative_qa.scorer import Scorer

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
PART_GLOB = "part-*.parquet"
RUN_FILE = "_run.json"


# --- inputs and keys --------------------------------------------------------------------------
def _content_hash(path: str) -> str | None:
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _iter_paths(source: str | Path, chunk_rows: int) -> Iterator[list[str]]:
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
    for paths in _iter_paths(src, chunk_rows):
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


def _member(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
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
            fresh = ~_member(ids, emitted) if len(emitted) else np.ones(len(ids), dtype=bool)
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
            left = ~_member(ids, done)
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


# --- the output table ---------------------------------------------------------------------------
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
            row = _flat(p.item["path"], None, p.error, scorer.tags, 0)
        else:
            q, t = outputs[id(p)]
            # Same aggregation as Scorer.score_frames: mean quality, a defect anywhere flags the video.
            scores = scorer.result(q[0], t[0]) if len(q) == 1 else scorer.result(float(q.mean()), t.max(axis=0))
            row = _flat(p.item["path"], scores, None, scorer.tags, len(q))
        row |= {
            "model_name": scorer.name,
            "model_version": scorer.version,
            "size": int(p.item["size"]),
            "mtime_ns": int(p.item["mtime_ns"]),
            "key": p.item["key"],
        }
        rows.append(row)
    return rows


class PartStore:
    """The parts folder of one output: atomic part files, the keys they cover, one writer at a time."""

    def __init__(self, output: str | Path, tags: Sequence[str], run_meta: dict[str, Any], overwrite: bool = False):
        self.output = Path(output)
        self.dir = self.output.with_name(self.output.name + ".parts")
        self.tags = list(tags)
        self.schema = output_schema(self.tags)
        self._keep: np.ndarray | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.dir / "_lock", "w")  # noqa: SIM115  (held for the store's life)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            self._lock.close()
            raise RuntimeError(f"another batch-score run is writing to {self.dir}") from e
        if overwrite:  # NOTE: only once the lock is ours, so a running writer never loses its parts
            for old in [*self.dir.glob(PART_GLOB), self.dir / RUN_FILE]:
                old.unlink(missing_ok=True)
            self.output.unlink(missing_ok=True)
        for tmp in self.dir.glob("*.tmp"):  # a killed run's unfinished part
            tmp.unlink()
        self.meta = self._check_meta(run_meta)
        self._next = 1 + max((int(p.stem.split("-")[1]) for p in self.parts()), default=-1)

    def _check_meta(self, run_meta: dict[str, Any]) -> dict[str, Any]:
        path = self.dir / RUN_FILE
        if path.is_file():
            old = json.loads(path.read_text())
            for k in ("model_name", "model_version", "model_sha256", "keys", "tags"):
                if old.get(k) != run_meta.get(k):
                    raise ValueError(
                        f"{self.dir} holds scores made with {k}={old.get(k)!r}, this run has {run_meta.get(k)!r}: "
                        "use --overwrite to start fresh, or another --output"
                    )
            return old
        meta = {**run_meta, "runs": []}
        self._write_json(path, meta)
        return meta

    @staticmethod
    def _write_json(path: Path, payload: dict[str, Any]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, path)

    def parts(self) -> list[Path]:
        return sorted(self.dir.glob(PART_GLOB))

    def done_ids(self) -> np.ndarray:
        """Sorted key ids of every creative already in a finished part."""
        ids = [key_ids(pq.read_table(p, columns=["key"]).column("key").to_pylist()) for p in self.parts()]
        return np.unique(np.concatenate(ids)) if ids else np.empty(0, dtype=np.int64)

    def write(self, rows: list[dict[str, Any]]) -> Path:
        """Write one part atomically: temporary name, fsync, rename, fsync the folder."""
        table = pa.Table.from_pandas(pd.DataFrame(rows, columns=self.schema.names), schema=self.schema)
        final = self.dir / f"part-{self._next:06d}.parquet"
        tmp = final.with_name(final.name + ".tmp")
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._next += 1
        return final

    def select(self, ids: np.ndarray) -> None:
        """Limit ``iter_batches`` and ``combine`` to these sorted key ids: the current inputs.

        A creative modified since it was scored, or dropped from the input, keeps its old row in its part
        but not in the combined output, which holds each current input exactly once.
        """
        self._keep = ids

    def iter_batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Every (selected) row of every part, one record batch at a time (bounded memory)."""
        keep = self._keep
        read = columns if columns is None or keep is None or "key" in columns else [*columns, "key"]
        for p in self.parts():
            for batch in pq.ParquetFile(p).iter_batches(batch_size=4096, columns=read):
                if keep is not None:
                    mask = _member(key_ids(batch.column("key").to_pylist()), keep)
                    batch = batch.filter(pa.array(mask))
                    if columns is not None and read != columns:
                        batch = batch.select(columns)
                if batch.num_rows:
                    yield batch

    def combine(self) -> int:
        """Stream the selected rows into the single output file (Parquet, or CSV by suffix); returns the row count."""
        tmp = self.output.with_name(self.output.name + ".tmp")
        n = 0
        csv = self.output.suffix.lower() == ".csv"
        writer = pacsv.CSVWriter(str(tmp), self.schema) if csv else pq.ParquetWriter(str(tmp), self.schema)
        try:
            for batch in self.iter_batches():
                writer.write_batch(batch)
                n += batch.num_rows
        finally:
            writer.close()
        os.replace(tmp, self.output)
        return n

    def record_run(self, stats: dict[str, Any]) -> None:
        self.meta.setdefault("runs", []).append(stats)
        self._write_json(self.dir / RUN_FILE, self.meta)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()


class RowBuffer:
    """Rows waiting for their part; a part is written every ``part_size`` rows."""

    def __init__(self, store: PartStore, part_size: int, bar: tqdm):
        self.store, self.part_size, self.bar = store, part_size, bar
        self.rows: list[dict[str, Any]] = []
        self.scored = 0
        self.errors = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        errs = sum(r["error"] is not None for r in rows)
        self.errors += errs
        self.scored += len(rows) - errs
        self.bar.update(len(rows))
        if errs:
            self.bar.set_postfix(errors=self.errors, refresh=False)
        while len(self.rows) >= self.part_size:
            self.store.write(self.rows[: self.part_size])
            del self.rows[: self.part_size]

    def flush(self) -> None:
        if self.rows:
            self.store.write(self.rows)
            self.rows = []


# --- the local engine: worker processes + onnxruntime here ---------------------------------------


class WorkerPool:
    """The decode processes, started at once (they need no model, so they start while it loads); restartable."""

    def __init__(self, workers: int, task: Callable[..., list[Prepared]] = prepare_chunk):
        self.workers, self.task = workers, task
        self.pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # NOTE: spawn, never fork: forking a process that holds onnxruntime's threads is unsafe.
        pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=init_worker,
                                   initargs=(os.getpid(),))  # fmt: skip
        for _ in range(self.workers):
            pool.submit(ready)
        return pool

    def submit(self, items: list[dict[str, Any]], spec: dict[str, Any], max_frames: int) -> Future:
        return self.pool.submit(self.task, items, spec, max_frames)

    def restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._start()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def run_local(
    scorer: Scorer,
    chunks: Iterator[list[dict[str, Any]]],
    out: RowBuffer,
    pool: WorkerPool | None,
    batch_size: int,
    prefetch: int = 4,
) -> None:
    """Score ``chunks`` of input rows into ``out``: the pool's processes prepare them (no pool: this process), ORT here.

    At most ``prefetch * workers`` chunks are in flight; results are consumed in input order. A worker that
    dies (a decoder crash, the OOM killer) takes the chunks in flight with it: they are redone one creative
    at a time on a fresh pool, and the creative that kills its worker again gets an error row.
    """
    pending: list[Prepared] = []
    frames = 0

    def consume(prepared: list[Prepared]) -> None:
        nonlocal pending, frames
        pending.extend(prepared)
        frames += sum(len(p.views) for p in prepared if p.views is not None)
        if frames >= batch_size:
            out.add(score_prepared(scorer, pending, batch_size))
            pending, frames = [], 0

    if pool is None:
        for items in chunks:
            consume([prepare(it, scorer.spec, scorer.max_frames) for it in items])
    else:
        spec = scorer.spec.to_dict()
        window: deque[tuple[list[dict[str, Any]], Future]] = deque()

        def submit() -> None:
            items = next(chunks, None)
            if items is not None:
                window.append((items, pool.submit(items, spec, scorer.max_frames)))

        def alone(item: dict[str, Any]) -> Prepared:
            try:
                return pool.submit([item], spec, scorer.max_frames).result()[0]
            except BrokenProcessPool:
                log.error("%s crashed its decode worker; it gets an error row", item["abspath"])
                pool.restart()
                return Prepared(item, None, "the decoder crashed on this file (its worker process died)")

        for _ in range(max(1, prefetch * pool.workers)):
            submit()
        while window:
            items, fut = window.popleft()
            try:
                prepared = fut.result()
            except BrokenProcessPool:
                lost = [items] + [it for it, _ in window]
                window.clear()
                log.warning("a decode worker died; redoing the %d chunks in flight one creative at a time", len(lost))
                pool.restart()
                for chunk in lost:
                    consume([alone(it) for it in chunk])
                for _ in range(max(1, prefetch * pool.workers)):
                    submit()
                continue
            submit()
            consume(prepared)
    if pending:
        out.add(score_prepared(scorer, pending, batch_size))


# --- the command ----------------------------------------------------------------------------------
@dataclass
class BatchSummary:
    """What a run did: counts, speed and where its results are."""

    inputs: int
    already_done: int
    scored: int
    errors: int
    rows: int
    seconds: float
    creatives_per_s: float
    output: str
    parts: str
    report: str | None
    engine: str
    workers: int
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"{self.scored + self.errors} creatives this run ({self.scored} scored, {self.errors} errors, "
            f"{self.already_done} already done) in {self.seconds:.1f} s, {self.creatives_per_s:.1f} creatives/s "
            f"[{self.engine}, {self.workers} workers]; {self.rows} rows -> {self.output}"
            + (f"; report {self.report}" if self.report else "")
        )


def default_report_path(output: str | Path) -> Path:
    out = Path(output)
    return out.with_name(out.stem + ".report.html")


def batch_score(
    input_path: str | Path,
    output: str | Path,
    model: str | Path | Scorer,
    batch_size: int = 32,
    workers: int | None = None,
    engine: str = "local",
    content_hash: bool = False,
    overwrite: bool = False,
    report: str | Path | None | bool = True,
    part_size: int = 1024,
    ort_threads: int | None = None,
    progress: bool = True,
) -> BatchSummary:
    """Score every creative of a folder, manifest or path list into ``output`` (.parquet or .csv), resumably.

    Args:
        workers: decode/preprocess processes (default: the machine's cores; 0 = in this process).
            For ``engine="ray"``, the actor pool size when there is no GPU.
        engine: ``"local"`` (processes on this machine) or ``"ray"`` (Ray Data; a cluster with ``RAY_ADDRESS``).
        content_hash: key finished creatives by a hash of their bytes instead of size and mtime.
        overwrite: drop earlier parts and start fresh.
        report: the HTML report's path; ``True`` puts it next to the output, ``None``/``False`` skips it.
        part_size: rows per part file (what a kill can lose at most).
        ort_threads: onnxruntime intra-op threads on CPU (default: the cores the workers leave, at least 1).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    out = Path(output)
    if out.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise ValueError(f"{out}: the output must end in .parquet or .csv")
    t0 = time.perf_counter()
    try:
        next(_iter_paths(input_path, 1), None)  # a bad input fails now, before a model loads or a worker starts
    except ManifestError as e:
        raise ValueError(str(e)) from e
    n_workers = cpu_count() if workers is None else workers
    pool = WorkerPool(n_workers) if engine == "local" and n_workers > 0 else None
    try:
        return _batch_score(input_path, out, model, pool, t0, n_workers, batch_size, engine, content_hash, overwrite,
                            report, part_size, ort_threads, progress)  # fmt: skip
    finally:
        if pool is not None:
            pool.shutdown()


def _batch_score(
    input_path: str | Path,
    out: Path,
    model: str | Path | Scorer,
    pool: ProcessPoolExecutor | None,
    t0: float,
    n_workers: int,
    batch_size: int,
    engine: str,
    content_hash: bool,
    overwrite: bool,
    report: str | Path | None | bool,
    part_size: int,
    ort_threads: int | None,
    progress: bool,
) -> BatchSummary:
    scorer = model if isinstance(model, Scorer) else Scorer(model)
    run_meta = {
        "model_name": scorer.name,
        "model_version": scorer.version,
        "model_sha256": scorer.model.sha256,
        "keys": "path+content_hash" if content_hash else "path+size+mtime",
        "tags": list(scorer.tags),
        "taxonomy_version": scorer.taxonomy.version,
    }
    store = PartStore(out, scorer.tags, run_meta, overwrite=overwrite)
    try:
        try:
            listing = make_listing(input_path, content_hash, store.done_ids(), store.dir / "_todo.parquet")
        except ManifestError as e:
            raise ValueError(str(e)) from e
        already = listing.n_done
        if not listing.n_inputs:
            log.warning("%s lists no creatives (images: %s; videos too)", input_path, ", ".join(sorted(MEDIA_EXTS)))
        if already:
            log.info("%d of %d creatives already scored in %s; scoring the other %d", already, listing.n_inputs,
                     store.dir, listing.n_todo)  # fmt: skip
        bar = tqdm(total=listing.n_todo, desc="batch-score", unit="creative", disable=not progress, smoothing=0.1)
        buf = RowBuffer(store, part_size, bar)
        t_score = time.perf_counter()
        extra: dict[str, Any] = {}
        try:
            if listing.n_todo and engine == "ray":
                from creative_qa.batch_ray import run_ray  # noqa: PLC0415

                extra = run_ray(scorer, listing, buf, workers=n_workers, batch_size=batch_size)
            elif listing.n_todo:
                threads = ort_threads or max(1, cpu_count() - n_workers)
                scorer.onnx.set_cpu_threads(threads)
                extra = {"ort_threads": threads}
                run_local(scorer, listing.chunks(8), buf, pool, batch_size)
        except BaseException:  # an interrupt, a full disk: keep the rows already scored
            with contextlib.suppress(Exception):
                buf.flush()
            bar.close()  # NOTE: now, so that whatever is printed next is not followed by the bar
            raise
        buf.flush()
        bar.close()
        seconds = time.perf_counter() - t_score
        rate = (buf.scored + buf.errors) / seconds if seconds > 0 and listing.n_todo else 0.0
        stats = {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "engine": engine,
            "workers": n_workers,
            "creatives": buf.scored + buf.errors,
            "errors": buf.errors,
            "seconds": round(seconds, 3),
            "creatives_per_s": round(rate, 2),
            **extra,
        }
        store.record_run(stats)
        listing.todo.unlink(missing_ok=True)
        store.select(listing.ids)
        rows = store.combine()
        report_path = None
        if report:
            from creative_qa.report import write_report  # noqa: PLC0415

            report_path = default_report_path(out) if report is True else Path(report)
            write_report(store, scorer, report_path, run=stats)
        summary = BatchSummary(
            inputs=listing.n_inputs,
            already_done=already,
            scored=buf.scored,
            errors=buf.errors,
            rows=rows,
            seconds=time.perf_counter() - t0,
            creatives_per_s=rate,
            output=str(out),
            parts=str(store.dir),
            report=str(report_path) if report_path else None,
            engine=engine,
            workers=n_workers,
            extra=extra,
        )
    finally:
        store.close()
    log.debug("%s", summary.line())  # the CLI prints it
    return summary


# --- the serial loop (one process, one stage after the other), kept for small in-process uses ---
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
                rows[i] = _flat(display[i], None, str(e), scorer.tags, 0)
                continue
            if len(frames) == 1:
                pending.append((i, frames[0].source))
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


def score_manifest(scorer: Scorer, df: pd.DataFrame, progress: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """A read manifest's files scored in this process: the table, and the ``(N, T)`` tag probabilities
    with NaN rows where a file could not be scored."""
    table = score_frame_table(scorer, df["abspath"].tolist(), df["path"].tolist(), progress=progress)
    probs = table[scorer.tags].to_numpy(dtype=np.float64, copy=True)
    probs[table["error"].notna().to_numpy()] = np.nan
    return table, probs


__all__ = [
    "BatchSummary",
    "PartStore",
    "Prepared",
    "batch_score",
    "default_report_path",
    "list_inputs",
    "output_schema",
    "prepare",
    "WorkerPool",
    "run_local",
    "score_frame_table",
    "score_manifest",
    "score_prepared",
]
