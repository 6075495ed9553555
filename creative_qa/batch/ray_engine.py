"""The Ray Data engine of ``batch-score``: the same rows as the local engine, from as many machines as Ray has.

The listing becomes a Ray Dataset; ``map_batches`` runs it through a fixed actor pool
(``ActorPoolStrategy(size=n)``), each actor holding one ``Scorer`` (and one GPU when the
cluster has GPUs: then one actor per GPU). On a CPU cluster an actor decodes, preprocesses
and runs onnxruntime on its batch; with GPUs, decoding and preprocessing run first as Ray
tasks on every CPU of the cluster (a GPU would otherwise wait on its actor's one CPU) and
the actors only run the model. Both use the local engine's own functions (``prepare``,
``score_prepared``), so the table is the same. Rows stream back to the driver, which writes
them as the same atomic parts as the local engine: resuming, combining and the report work
unchanged. The model travels to the actors through the object store, so cluster nodes need
no copy of it; the creatives' paths must be readable from every node (a shared filesystem).

With ``RAY_ADDRESS`` unset a small local Ray is started in-process (no dashboard, a small
object store, ``workers`` CPUs) and stopped at the end; with it set, that cluster is used.
Ray is an optional extra: ``pip install 'creative-qa[scale]'``.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from typing import Any

import numpy as np
import pandas as pd

from creative_qa.batch.inputs import Listing
from creative_qa.batch.store import RowBuffer
from creative_qa.batch.table import output_schema, score_prepared
from creative_qa.batch.worker import Prepared, prepare
from creative_qa.preprocess import PreprocessSpec
from creative_qa.scorer import ModelBytes, Scorer

log = logging.getLogger(__name__)

LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2
INPUT_COLUMNS = ["path", "abspath", "size", "mtime_ns", "key"]
# Decode and preprocess as separate Ray tasks before the model's actors; None: when the cluster has GPUs.
SPLIT_DECODE: bool | None = None


def _pack(views: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, views, allow_pickle=False)
    return buf.getvalue()


def _unpack(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def prepare_batch(batch: pd.DataFrame, spec: dict[str, Any], max_frames: int) -> pd.DataFrame:
    """Ray task: decode and preprocess a batch; views travel packed (a video has more frames than an image)."""
    s = PreprocessSpec.from_dict(spec)
    prepared = [prepare(item, s, max_frames) for item in batch[INPUT_COLUMNS].to_dict("records")]
    out = batch[INPUT_COLUMNS].copy()
    out["views"] = [None if p.views is None else _pack(p.views) for p in prepared]
    out["prep_error"] = [p.error for p in prepared]
    return out


class RayScorer:
    """One actor's model: input rows (a pandas batch) in, output rows out."""

    def __init__(self, model: list, max_frames: int, batch_size: int, gpu: bool):
        import ray

        data = ray.get(model[0])  # NOTE: wrapped in a list so Ray Data hands us the reference, not a copy per call
        self.scorer = Scorer(
            ModelBytes(data, "ray object store"),
            providers=None if gpu else ["CPUExecutionProvider"],
            max_frames=max_frames,
            intra_op_threads=None if gpu else 1,  # one CPU per actor
        )
        self.batch_size = batch_size
        self.columns = output_schema(self.scorer.tags).names

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        if "views" in batch.columns:  # prepared by prepare_batch tasks
            prepared = [
                # NOTE: a null may come back as None or NaN depending on the block format.
                Prepared(
                    item, _unpack(v) if isinstance(v, bytes | bytearray) else None, e if isinstance(e, str) else None
                )
                for item, v, e in zip(
                    batch[INPUT_COLUMNS].to_dict("records"), batch["views"], batch["prep_error"], strict=True
                )
            ]
        else:
            items = batch[INPUT_COLUMNS].to_dict("records")
            prepared = [prepare(item, self.scorer.spec, self.scorer.max_frames) for item in items]
        return pd.DataFrame(score_prepared(self.scorer, prepared, self.batch_size), columns=self.columns)


def _init_ray(workers: int) -> bool:
    """Connect to ``RAY_ADDRESS`` or start a small local Ray; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            address="local",
            num_cpus=max(1, workers),
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    return True


def run_ray(
    scorer: Scorer, listing: Listing, out: RowBuffer, workers: int, batch_size: int, chunk_size: int = 16
) -> dict[str, Any]:
    """Score the listing's creatives into ``out`` with Ray Data; returns facts about the run for the record."""
    try:
        import ray
        from ray.data import ActorPoolStrategy, DataContext
    except ImportError as e:
        raise RuntimeError("--engine ray needs Ray: pip install 'creative-qa[scale]'") from e

    started = _init_ray(workers)
    try:
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # our own bar counts creatives
        # NOTE: ... and Ray Data warns that its own is off: that one message, and only it, is not for our users.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        actors = gpus if gpus else max(1, workers)
        model_ref = ray.put(scorer.model.data)
        # NOTE: a block goes to one actor: at least one block per actor, a few more to balance the load.
        n = listing.n_todo
        chunk_size = max(1, min(chunk_size, -(-n // actors)))
        blocks = max(min(actors, n), min(-(-n // chunk_size), actors * 8))
        # Each block goes to the object store as it is read: the driver never holds the whole listing.
        refs = [ray.put(pd.DataFrame(rows)[INPUT_COLUMNS]) for rows in listing.chunks(-(-n // blocks))]
        ds = ray.data.from_pandas_refs(refs)
        split = bool(gpus) if SPLIT_DECODE is None else SPLIT_DECODE
        if split:
            ds = ds.map_batches(
                prepare_batch,
                fn_kwargs={"spec": scorer.spec.to_dict(), "max_frames": scorer.max_frames},
                batch_size=chunk_size,
                batch_format="pandas",
                num_cpus=1,
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            ds = ds.map_batches(
                RayScorer,
                fn_constructor_kwargs={
                    "model": [model_ref],
                    "max_frames": scorer.max_frames,
                    "batch_size": batch_size,
                    "gpu": bool(gpus),
                },
                batch_size=chunk_size,
                batch_format="pandas",
                compute=ActorPoolStrategy(size=actors),
                num_gpus=1 if gpus else None,
                # NOTE: CPU actors that only run the model leave half a CPU each to the decode tasks.
                num_cpus=0.5 if split and not gpus else 1,
                # NOTE: on a cluster a lost node's actors are restarted (Ray Data's default; Ray then logs an
                # error-level line about restartable actors with object-store arguments, ray#53727). On the
                # local Ray an actor only dies by crashing, and would crash again: no restarts, no such line.
                # max_restarts has no named parameter in the pinned Ray (2.60), whose catch-all warns.
                **({} if os.environ.get("RAY_ADDRESS") else {"max_restarts": 0}),
            )
        log.info("Ray Data: %d actors (%s), %d blocks, decode %s", actors, f"{gpus} GPUs" if gpus else "CPU",
                 len(refs), "in tasks" if split else "in the actors")  # fmt: skip
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            batch["error"] = batch["error"].astype(object).where(batch["error"].notna(), None)
            out.add(batch.to_dict("records"))
    finally:
        if started:
            ray.shutdown()
    address = os.environ.get("RAY_ADDRESS") or "local"
    return {"ray_actors": actors, "ray_gpus": gpus, "ray_address": address, "ray_decode_tasks": split}


__all__ = ["RayScorer", "prepare_batch", "run_ray"]
