"""``Scorer``: quality and tag scores for creatives, from one ONNX file on onnxruntime.

    >>> scorer = Scorer("model.onnx")            # or Scorer("models:/creative-qa@champion")
    >>> scorer.score_file("ad.png")["flags"]
    ['blurry']

Everything model-specific (taxonomy, thresholds, preprocessing spec, version)
is read from the file's metadata. Providers are chosen TensorRT > CUDA > CPU by
what onnxruntime offers here; ``CREATIVE_QA_PROVIDERS`` (comma-separated) or the
``providers`` argument overrides.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from creative_qa.media import DEFAULT_MAX_FRAMES, DecodeLimits, Frame, MediaError, decode_bytes, decode_file
from creative_qa.paths import tracking_uri
from creative_qa.preprocess import PreprocessSpec, preprocess
from creative_qa.taxonomy import Taxonomy

log = logging.getLogger(__name__)

META_KEYS = {
    "taxonomy": "creative_qa.taxonomy",
    "thresholds": "creative_qa.thresholds",
    "preprocess": "creative_qa.preprocess",
    "name": "creative_qa.model_name",
    "version": "creative_qa.model_version",
}
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
FIX_HINT = (
    "run `creative-qa demo` (trains and registers a demo model), register yours with "
    "`creative-qa export --checkpoint <run>/last.pt`, or pass `--model path/to/model.onnx` "
    "(serving: CREATIVE_QA_MODEL=path/to/model.onnx)"
)


class ModelNotFoundError(FileNotFoundError):
    """No model where one was asked for: the message says what is missing and how to fix it."""


def choose_providers(requested: Sequence[str] | None = None) -> list[str]:
    """The providers to use, best first, among those this onnxruntime build offers."""
    available = ort.get_available_providers()
    env = os.environ.get("CREATIVE_QA_PROVIDERS")
    wanted = list(requested) if requested else ([p.strip() for p in env.split(",") if p.strip()] if env else None)
    if wanted:
        missing = [p for p in wanted if p not in available]
        if missing:
            raise ValueError(f"onnxruntime providers {missing} are not available here (available: {available})")
        return wanted
    return [p for p in PREFERRED_PROVIDERS if p in available] or available


def resolve_model_uri(uri: str | Path) -> Path:
    """A local path as is; ``models:/name@alias`` or ``runs:/...`` downloaded through MLflow.

    Raises ``ModelNotFoundError`` naming what is missing and the command that fixes it.
    """
    s = str(uri)
    if "://" not in s and ":/" not in s:
        p = Path(s)
        if not p.is_file():
            raise ModelNotFoundError(f"model file not found: {p}; {FIX_HINT}")
        return p
    try:
        from mlflow.exceptions import MlflowException  # noqa: PLC0415

        import mlflow  # noqa: PLC0415  (only for registry URIs; mlflow-skinny is enough)
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError(f"{s} is an MLflow URI: install mlflow-skinny (pip install 'creative-qa[serve]')") from e
    store = tracking_uri()
    if s.startswith("models:/") and store.startswith("sqlite:///") and not Path(store[len("sqlite:///") :]).is_file():
        # NOTE: a fresh machine: say so instead of creating an empty store just to find nothing in it.
        raise ModelNotFoundError(f"no model at {s}: nothing is registered yet (no MLflow store at {store}); {FIX_HINT}")
    mlflow.set_tracking_uri(store)
    dst = Path(tempfile.mkdtemp(prefix="creative-qa-model-"))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=s, dst_path=str(dst)))
        files = [local] if local.is_file() else sorted(local.rglob("*.onnx"))
        if not files:
            raise ModelNotFoundError(f"{s} holds no .onnx file; {FIX_HINT}")
    except MlflowException as e:
        shutil.rmtree(dst, ignore_errors=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelNotFoundError(f"no model at {s} in the MLflow store {store} ({first}); {FIX_HINT}") from e
    except BaseException:
        # NOTE: a failed resolve must not leave its download folder behind (the caller never sees it).
        shutil.rmtree(dst, ignore_errors=True)
        raise
    return files[0]


def _load_onnx(model: str | Path, providers, intra_op_threads: int | None = None) -> OnnxModel:
    """The session for a path or an MLflow URI; a downloaded copy is deleted once the session holds it
    (the export is one self-contained file), so reloads from the registry leave nothing behind."""
    path = resolve_model_uri(model)
    try:
        return OnnxModel(path, providers, intra_op_threads)
    finally:
        tmp = next((p for p in path.parents if p.name.startswith("creative-qa-model-")), None)
        if tmp is not None and Path(tempfile.gettempdir()) in tmp.parents:
            shutil.rmtree(tmp, ignore_errors=True)


class OnnxModel:
    """The bare session: uint8 views in, ``(quality, tags)`` probabilities out."""

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, intra_op_threads: int | None = None):
        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            # NOTE: a server shares the cores with its decode pool: a fixed thread count, one
            # inter-op thread and no spin-waiting keep onnxruntime from oversubscribing them.
            opts.intra_op_num_threads = intra_op_threads
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=choose_providers(providers))
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        quality, tags = self.session.run(["quality", "tags"], {"images": images})
        return quality.astype(np.float32), tags.astype(np.float32)


class Scorer:
    """Scores images, GIFs and videos with an exported creative-qa model."""

    def __init__(
        self,
        model: str | Path,
        providers: Sequence[str] | None = None,
        batch_size: int = 32,
        max_frames: int = DEFAULT_MAX_FRAMES,
    ):
        self._setup(str(model), _load_onnx(model, providers), batch_size, max_frames)

    @classmethod
    def load(
        cls,
        model: str | Path,
        providers: Sequence[str] | None = None,
        batch_size: int = 32,
        max_frames: int = DEFAULT_MAX_FRAMES,
        intra_op_threads: int | None = None,
        limits: DecodeLimits | None = None,
    ) -> Scorer:
        """Like ``Scorer(...)``, with onnxruntime's thread count and the decoding limits set (serving uses it)."""
        obj = cls.__new__(cls)
        obj._setup(str(model), _load_onnx(model, providers, intra_op_threads), batch_size, max_frames)
        obj.limits = limits
        return obj

    def _setup(self, source: str, onnx: OnnxModel, batch_size: int, max_frames: int) -> None:
        self.source = source
        self.onnx = onnx
        meta = self.onnx.metadata
        missing = [k for k in (META_KEYS["taxonomy"], META_KEYS["preprocess"]) if k not in meta]
        if missing:
            raise ValueError(f"{self.source} is not a creative-qa model: metadata lacks {missing}")
        self.taxonomy = Taxonomy.from_json(meta[META_KEYS["taxonomy"]])
        self.tags = self.taxonomy.tag_names
        self.thresholds: dict[str, float] = (
            json.loads(meta.get(META_KEYS["thresholds"], "{}")) or self.taxonomy.thresholds
        )
        self.spec = PreprocessSpec.from_dict(json.loads(meta[META_KEYS["preprocess"]]))
        self.name = meta.get(META_KEYS["name"], "creative-qa")
        self.version = meta.get(META_KEYS["version"], "0")
        self.batch_size = batch_size
        self.max_frames = max_frames
        self.limits: DecodeLimits | None = None  # None: DecodeLimits.from_env()

    # --- description ------------------------------------------------------------------
    @property
    def model_info(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "taxonomy_version": self.taxonomy.version}

    def describe(self) -> dict[str, Any]:
        return {
            **self.model_info,
            "taxonomy": self.taxonomy.to_dict(),
            "thresholds": self.thresholds,
            "preprocess": self.spec.to_dict(),
            "providers": self.onnx.providers,
            "source": self.source,
            "metadata": {k: v for k, v in self.onnx.metadata.items() if not k.startswith("creative_qa.taxonomy")},
        }

    # --- scoring ----------------------------------------------------------------------
    def predict(self, frames: Sequence[np.ndarray | Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """RGB frames (arrays or PIL images) -> quality ``(N,)`` and tag probabilities ``(N, T)``, in batches."""
        qs, ts = [], []
        for i in range(0, len(frames), self.batch_size):
            x = np.stack([preprocess(f, self.spec) for f in frames[i : i + self.batch_size]])
            q, t = self.onnx.run(x)
            qs.append(q)
            ts.append(t)
        if not qs:
            return np.zeros(0, np.float32), np.zeros((0, len(self.tags)), np.float32)
        return np.concatenate(qs), np.concatenate(ts)

    def result(self, quality: float, tags: np.ndarray) -> dict[str, Any]:
        """The Scores JSON for one creative from its quality and tag probabilities."""
        tag_scores = {t: round(float(p), 6) for t, p in zip(self.tags, tags, strict=True)}
        return {
            "quality": round(float(quality), 6),
            "tags": tag_scores,
            "flags": [t for t in self.tags if tag_scores[t] >= self.thresholds.get(t, 0.5)],
            "model": self.model_info,
        }

    @property
    def decode_min_side(self) -> int | None:
        """How small decoding may make a creative (``PreprocessSpec.decode_min_side``)."""
        return self.spec.decode_min_side

    def decode(self, data: bytes, filename: str | None = None) -> list[Frame]:
        """Bounded decoding of one creative, reduced to what the model needs."""
        return decode_bytes(data, filename, self.max_frames, self.limits, self.decode_min_side)

    def prepare(self, frames: Sequence[Frame]) -> np.ndarray:
        """Decoded frames -> model input ``(N, V, S, S, 3)`` uint8 (the CPU-heavy half of scoring)."""
        if not frames:
            raise MediaError("no frames to score")
        return np.stack([preprocess(f.source, self.spec) for f in frames])

    def run_prepared(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model input ``(N, V, S, S, 3)`` -> quality ``(N,)`` and tags ``(N, T)``, in ``batch_size`` chunks."""
        qs, ts = [], []
        for i in range(0, len(x), self.batch_size):
            q, t = self.onnx.run(x[i : i + self.batch_size])
            qs.append(q)
            ts.append(t)
        if not qs:
            return np.zeros(0, np.float32), np.zeros((0, len(self.tags)), np.float32)
        return np.concatenate(qs), np.concatenate(ts)

    def scores(
        self, frames: Sequence[Frame], quality: np.ndarray, tags: np.ndarray, is_video: bool | None = None
    ) -> dict[str, Any]:
        """The Scores JSON for one creative from its frames' model outputs (see ``score_frames``)."""
        if len(frames) == 1 and not is_video:
            return self.result(quality[0], tags[0])
        out = self.result(float(quality.mean()), tags.max(axis=0))
        out["frames"] = [
            {
                "time_s": round(f.time_s, 3),
                "quality": round(float(q), 6),
                "tags": {t: round(float(p), 6) for t, p in zip(self.tags, row, strict=True)},
            }
            for f, q, row in zip(frames, quality, tags, strict=True)
        ]
        return out

    def score_frames(self, frames: Sequence[Frame], is_video: bool | None = None) -> dict[str, Any]:
        """Scores for one creative given its decoded frames.

        A video (more than one frame) gets per-frame scores under ``frames``; its
        top level takes the mean quality and, per tag, the highest probability over
        frames (a defect anywhere in the video flags it).
        """
        if not frames:
            raise MediaError("no frames to score")
        quality, tags = self.predict([f.source for f in frames])
        return self.scores(frames, quality, tags, is_video)

    def score_bytes(self, data: bytes, filename: str | None = None) -> dict[str, Any]:
        frames = self.decode(data, filename)
        return self.score_frames(frames, is_video=len(frames) > 1)

    def score_file(self, path: str | Path) -> dict[str, Any]:
        frames = decode_file(path, self.max_frames, self.limits, self.decode_min_side)
        return self.score_frames(frames, is_video=len(frames) > 1)
