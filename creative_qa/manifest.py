"""Label manifests: CSV or Parquet with ``path``, one column per tag (1, 0 or blank) and ``quality``.

Blank means *unknown* and stays NaN all the way into the loss mask; it is never a 0.
Paths are relative to the manifest's folder unless absolute. A folder can stand in
for an unlabeled manifest: every image or video under it becomes a row.

A labeled manifest has a column for every tag of the taxonomy: a missing column is
an error naming the tag (a typo or a manifest of another taxonomy version must not
silently become "all unknown"), unless the taxonomy marks the tag ``new`` (blank on
purpose). A manifest with no tag column at all is unlabeled.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from creative_qa.media import MEDIA_EXTS


class ManifestError(ValueError):
    pass


def read_manifest(source: str | Path) -> pd.DataFrame:
    """Read a manifest (or list a folder) into a frame with an absolute ``abspath`` column."""
    src = Path(source)
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTS)
        df = pd.DataFrame({"path": [str(p.relative_to(src)) for p in files]})
        root = src.absolute()
    elif src.is_file():
        if src.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(src)
        elif src.suffix.lower() in (".csv", ".tsv", ".txt"):
            df = pd.read_csv(src, sep="\t" if src.suffix.lower() == ".tsv" else ",", dtype={"path": str})
        else:
            raise ManifestError(f"{src}: a manifest must be .csv, .tsv or .parquet (or a folder of creatives)")
        root = src.absolute().parent
    else:
        raise ManifestError(f"{src}: no such manifest or folder")
    if "path" not in df.columns:
        raise ManifestError(f"{src}: the manifest has no 'path' column (columns: {', '.join(map(str, df.columns))})")
    df = df.reset_index(drop=True)
    df.attrs["source"] = str(src)
    df["abspath"] = [str(p if Path(p).is_absolute() else (root / p)) for p in df["path"].astype(str)]
    return df


def abspaths(df: pd.DataFrame, paths: Iterable[str]) -> list[str]:
    """``paths`` as ``df`` (``read_manifest``'s) writes them, or already absolute -> absolute paths."""
    where = dict(zip(df["path"].astype(str), df["abspath"], strict=True))
    return [where.get(str(p), str(p)) for p in paths]


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` in the format ``path``'s suffix names (.parquet/.pq, .tsv, else CSV), atomically: a manifest
    being replaced is never left half-written."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
    os.replace(tmp, path)
    return path


def label_matrix(df: pd.DataFrame, tags: list[str], new: Iterable[str] = ()) -> np.ndarray:
    """``(N, T)`` float32 with 1, 0 or NaN (unknown).

    A tag without a column is an error unless it is in ``new`` (then all unknown);
    a manifest with no tag column at all is unlabeled (all unknown).
    """
    out = np.full((len(df), len(tags)), np.nan, dtype=np.float32)
    if any(t in df.columns for t in tags):
        new = set(new)
        missing = [t for t in tags if t not in df.columns and t not in new]
        if missing:
            src = df.attrs.get("source", "manifest")
            raise ManifestError(
                f"{src}: no column for tag(s) {', '.join(repr(t) for t in missing)} of the taxonomy; add the "
                "column (blank cells are fine), mark the tag `new: true` in the taxonomy, or, for a manifest "
                "of an older taxonomy, migrate it (`creative-qa taxonomy migrate --mapping ...`)"
            )
    for j, t in enumerate(tags):
        if t not in df.columns:
            continue
        col = pd.to_numeric(df[t], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isnan(col) & ~np.isin(col, (0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ManifestError(
                f"{df.attrs.get('source', 'manifest')}, row {i + 1} ({df['path'].iloc[i]}): tag {t!r} is "
                f"{df[t].iloc[i]}; use 1, 0 or leave it blank"
            )
        out[:, j] = col
    return out


def quality_vector(df: pd.DataFrame) -> np.ndarray:
    if "quality" not in df.columns:
        return np.full(len(df), np.nan, dtype=np.float32)
    q = pd.to_numeric(df["quality"], errors="coerce").to_numpy(dtype=np.float32)
    if np.any((q < 0) | (q > 1)):
        raise ManifestError("quality must lie in [0, 1]")
    return q
