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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from creative_qa.flags import FlagPolicy
from creative_qa.media import DEFAULT_MAX_FRAMES, DecodeLimits, Frame, MediaError, decode_bytes, decode_file
from creative_qa.onnx_model import (
    FIX_HINT,
    PREFERRED_PROVIDERS,
    ModelBytes,
    ModelNotFoundError,
    OnnxModel,
    choose_providers,
    load_model,
)
from creative_qa.preprocess import PreprocessSpec, preprocess
from creative_qa.taxonomy import Taxonomy

log = logging.getLogger(__name__)

META_KEYS = {
    "taxonomy": "creative_qa.taxonomy",
    "thresholds": "creative_qa.thresholds",
    "flags": "creative_qa.flags",
    "preprocess": "creative_qa.preprocess",
    "name": "creative_qa.model_name",
    "version": "creative_qa.model_version",
}
_DESCRIBED = (META_KEYS["taxonomy"], META_KEYS["flags"])  # metadata describe() gives its own keys


class Scorer:
    """Scores images, GIFs and videos with an exported creative-qa model."""

    def __init__(
        self,
        model: str | Path | ModelBytes,
        providers: Sequence[str] | None = None,
        batch_size: int = 32,
        max_frames: int = DEFAULT_MAX_FRAMES,
        intra_op_threads: int | None = None,
        limits: DecodeLimits | None = None,
    ):
        """Args:
        model: an ONNX path, ``models:/name@alias``, ``runs:/...``, or a loaded ``ModelBytes``.
        providers: onnxruntime providers, best first (default: ``$CREATIVE_QA_PROVIDERS``, else the best here).
        intra_op_threads: a fixed onnxruntime thread count without spin-waiting (serving and batch set it).
        limits: decoding limits (default: ``DecodeLimits.from_env()``).
        """
        self.model = load_model(model)
        self._setup(self.model.source, OnnxModel(self.model, providers, intra_op_threads), batch_size, max_frames)
        self.limits = limits

    def _setup(self, source: str, onnx: OnnxModel, batch_size: int, max_frames: int) -> None:
        self.source = source
        self.onnx = onnx
        meta = self.onnx.metadata
        missing = [k for k in (META_KEYS["taxonomy"], META_KEYS["preprocess"]) if k not in meta]
        if missing:
            raise ValueError(f"{self.source} is not a creative-qa model: metadata lacks {missing}")
        self.taxonomy = Taxonomy.from_json(meta[META_KEYS["taxonomy"]])
        self.tags = self.taxonomy.tag_names
        thresholds = json.loads(meta.get(META_KEYS["thresholds"], "{}")) or self.taxonomy.thresholds
        policy = meta.get(META_KEYS["flags"])
        self.flag_policy = FlagPolicy.from_json(policy) if policy else FlagPolicy.from_thresholds(thresholds)
        self.thresholds: dict[str, float] = self.flag_policy.thresholds
        self.spec = PreprocessSpec.from_dict(json.loads(meta[META_KEYS["preprocess"]]))
        self.name = meta.get(META_KEYS["name"], "creative-qa")
        self.version = meta.get(META_KEYS["version"], "0")
        self.batch_size = batch_size
        self.max_frames = max_frames
        self.limits: DecodeLimits | None = None  # None: DecodeLimits.from_env()

    # --- description ------------------------------------------------------------------
    @property
    def unreliable(self) -> dict[str, str]:
        """Tags this model never flags, and why (their probabilities are still returned)."""
        return self.flag_policy.unreliable

    @property
    def model_info(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "taxonomy_version": self.taxonomy.version}

    def describe(self) -> dict[str, Any]:
        return {
            **self.model_info,
            "taxonomy": self.taxonomy.to_dict(),
            "thresholds": self.thresholds,
            "unreliable": self.unreliable,
            "flag_policy": self.flag_policy.to_dict(),
            "preprocess": self.spec.to_dict(),
            "providers": self.onnx.providers,
            "source": self.source,
            "metadata": {k: v for k, v in self.onnx.metadata.items() if not k.startswith(_DESCRIBED)},
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
            "flags": self.flag_policy.flags(tag_scores),
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


__all__ = [
    "FIX_HINT",
    "META_KEYS",
    "PREFERRED_PROVIDERS",
    "ModelBytes",
    "ModelNotFoundError",
    "OnnxModel",
    "Scorer",
    "choose_providers",
    "load_model",
]
