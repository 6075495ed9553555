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

import importlib
from typing import Any

# name -> the module of this package that defines it. Loaded on first use, so a worker process importing
# creative_qa.batch.worker pulls in numpy, Pillow and the media decoder, not pyarrow, onnxruntime or the engines.
_EXPORTS = {
    "batch_score": "command", "BatchSummary": "command", "default_report_path": "command", "ENGINES": "command",
    "BatchOptions": "command",
    "list_inputs": "inputs", "iter_inputs": "inputs", "Listing": "inputs", "make_listing": "inputs",
    "key_ids": "inputs",
    "PartStore": "store",
    "output_schema": "table", "score_prepared": "table", "RowBuffer": "store",
    "WorkerPool": "local", "run_local": "local",
    "Prepared": "worker", "prepare": "worker",
    "score_frame_table": "serial", "score_manifest": "serial",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
