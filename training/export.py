"""Export a checkpoint to one self-contained ONNX file, check parity, register it in MLflow.

The graph takes ``images``: uint8 ``(N, V, S, S, 3)`` exactly as
``creative_qa.preprocess`` produces them, normalises inside, and returns
``quality`` ``(N,)`` and ``tags`` ``(N, T)`` probabilities. Its metadata carries
the taxonomy, the calibrated thresholds, the preprocessing spec and the model's
name and version, so ``creative_qa.Scorer`` needs nothing but the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow.onnx
import numpy as np
import onnx
import torch
from mlflow.tracking import MlflowClient

import mlflow
from creative_qa.flags import FlagPolicy
from creative_qa.manifest import read_manifest
from creative_qa.media import MediaError, load_frame
from creative_qa.preprocess import PreprocessSpec, preprocess
from creative_qa.scorer import META_KEYS, OnnxModel
from creative_qa.taxonomy import taxonomy_from_dict
from training import tracking
from training.checkpoint import Checkpoint
from training.model import ProbabilityModel, config_of, model_from_checkpoint

log = logging.getLogger(__name__)
ALIAS = "champion"


@dataclass
class ExportResult:
    onnx_path: Path
    parity_max_abs_diff: float
    parity_images: int
    registered_name: str | None = None
    registered_version: str | None = None
    model_uri: str | None = None


def next_version(name: str) -> str:
    """The version the registry will give the next registration of ``name``."""
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except mlflow.exceptions.MlflowException:
        return "1"
    return str(max((int(v.version) for v in versions), default=0) + 1)


def export_onnx(
    ckpt: Checkpoint, out_path: Path, version: str, name: str, wrapped: torch.nn.Module | None = None
) -> Path:
    """Write the ONNX file for a checkpoint (``wrapped``: its ``ProbabilityModel``, if already built)."""
    cfg = config_of(ckpt)
    spec = PreprocessSpec.from_dict(ckpt.preprocess)
    wrapped = wrapped or ProbabilityModel(model_from_checkpoint(ckpt)).eval()
    dummy = torch.zeros((2, spec.views, spec.input_size, spec.input_size, 3), dtype=torch.uint8)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # NOTE: the exporter reports progress on stdout, where our CLI prints its JSON.
    with contextlib.redirect_stdout(sys.stderr):
        torch.onnx.export(
            wrapped,
            (dummy,),
            str(out_path),
            input_names=["images"],
            output_names=["quality", "tags"],
            dynamic_shapes={"images": {0: batch}},
            dynamo=True,
            external_data=False,
            optimize=True,
        )
    proto = onnx.load(str(out_path))
    taxonomy = taxonomy_from_dict(ckpt.taxonomy, "<checkpoint>")
    thresholds = ckpt.thresholds or taxonomy.thresholds
    policy = FlagPolicy.from_dict(ckpt.flags) if ckpt.flags else FlagPolicy.from_thresholds(thresholds)
    meta = {
        META_KEYS["taxonomy"]: taxonomy.to_json(),
        META_KEYS["thresholds"]: json.dumps(thresholds),
        # NOTE: without the anchors (training's record of what the rate estimate rests on): a scorer of an older
        # version, which reads every field of the policy, loads this model too
        META_KEYS["flags"]: json.dumps({k: v for k, v in policy.to_dict().items() if k != "anchors"}),
        META_KEYS["preprocess"]: json.dumps(spec.to_dict()),
        META_KEYS["name"]: name,
        META_KEYS["version"]: version,
        "creative_qa.backbone": cfg.model.backbone,
        "creative_qa.method": cfg.method.name,
        "creative_qa.run_id": str(ckpt.run_id or ""),
        "creative_qa.exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = f"creative-qa {name} v{version}: quality and {len(taxonomy)} tag probabilities"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out_path))
    return out_path


def parity_check(
    ckpt: Checkpoint, wrapped: torch.nn.Module, onnx_path: Path, image_paths: list[str]
) -> tuple[float, int]:
    """Max |torch - onnxruntime| over both outputs' probabilities on real creatives."""
    spec = PreprocessSpec.from_dict(ckpt.preprocess)
    views = []
    for p in image_paths:
        try:
            views.append(preprocess(load_frame(p), spec))
        except MediaError:
            continue
    if not views:
        views = [
            np.random.default_rng(0).integers(0, 256, (spec.views, spec.input_size, spec.input_size, 3), dtype=np.uint8)
        ]
    x = np.stack(views)
    with torch.no_grad():
        q_t, tags_t = (t.numpy() for t in wrapped(torch.from_numpy(x)))
    q_o, tags_o = OnnxModel(onnx_path, providers=["CPUExecutionProvider"]).run(x)
    diff = max(float(np.abs(q_t - q_o).max()), float(np.abs(tags_t - tags_o).max()))
    return diff, len(x)


def export_checkpoint(
    checkpoint: str | Path,
    out_path: str | Path | None = None,
    parity_source: str | None = None,
    parity_n: int = 32,
    register: bool = True,
    name: str | None = None,
    alias: str = ALIAS,
    tolerance: float = 1e-4,
) -> ExportResult:
    """Checkpoint -> ONNX (+ parity check) -> logged to its run -> registered -> alias set."""
    ckpt = Checkpoint.load(checkpoint)
    cfg = config_of(ckpt)
    name = name or cfg.register_as
    run_id = ckpt.run_id
    tracking.setup(cfg.experiment)
    version = next_version(name) if register else "0"
    out = Path(out_path) if out_path else Path(checkpoint).with_name("model.onnx")
    wrapped = ProbabilityModel(model_from_checkpoint(ckpt)).eval()
    export_onnx(ckpt, out, version, name, wrapped)

    images: list[str] = []
    if parity_source:
        images = read_manifest(parity_source)["abspath"].tolist()[:parity_n]
    diff, n = parity_check(ckpt, wrapped, out, images)
    log.info("ONNX parity on %d creatives: max |torch - onnx| = %.2e", n, diff)
    if diff > tolerance:
        raise RuntimeError(f"ONNX parity check failed: max abs diff {diff:.2e} > {tolerance:.0e}")
    result = ExportResult(out, diff, n)
    if not register:
        return result

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({"onnx_parity_max_abs_diff": diff, "onnx_parity_images": n})
        info = mlflow.onnx.log_model(
            onnx.load(str(out)),
            name="onnx",
            save_as_external_data=False,
            pip_requirements=["onnxruntime", "creative-qa"],
        )
    mv = mlflow.register_model(info.model_uri, name, tags={"backbone": cfg.model.backbone, "method": cfg.method.name})
    if str(mv.version) != version:
        log.warning(
            "registry gave version %s, the ONNX metadata says %s (a concurrent registration?)", mv.version, version
        )
    MlflowClient().set_registered_model_alias(name, alias, mv.version)
    log.info("registered %s version %s as %s@%s", name, mv.version, name, alias)
    result.registered_name, result.registered_version = name, str(mv.version)
    result.model_uri = f"models:/{name}@{alias}"
    return result
