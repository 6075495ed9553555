"""The part store: rows written in atomic parts, the keys already done, the combined output."""

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from creative_qa.batch.inputs import key_ids, member
from creative_qa.batch.table import output_schema

log = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"
RUN_FILE = "_run.json"


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
                    mask = member(key_ids(batch.column("key").to_pylist()), keep)
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
