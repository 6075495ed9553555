"""The one shared preprocessing function: what the model sees of a creative.

Shrinking a whole creative to a small square erases the very evidence of blur,
noise, JPEG blocks and pixelation, while layout defects (letterbox bars, text
coverage, exposure) need the whole frame. So the model sees ``1 + crops`` views of
``input_size`` x ``input_size`` uint8 RGB pixels:

* view 0: the whole creative, stretched to the square (no padding: padding would
  look exactly like letterbox bars);
* views 1..crops: detail crops taken from the creative rescaled so its short side
  is ``detail_side`` pixels. Defects are defined relative to the creative's own size
  (DESIGN.md), so a fixed short side keeps their scale constant from a 256 px
  thumbnail to a 1080 px original; ``detail_side=0`` takes crops at native size.

Training, export and serving all call ``preprocess``; the spec travels in the ONNX
metadata, so a scorer cannot disagree with the model it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

# Crop centres as fractions of (width, height); the first `crops` are used.
CROP_CENTRES: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.28, 0.3), (0.72, 0.7), (0.28, 0.7), (0.72, 0.3))


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: int = 128  # side of every view, pixels
    crops: int = 2  # detail crops next to the whole view
    detail_side: int = 256  # short side the creative is rescaled to before cropping; 0 = native
    resize: str = "stretch"  # how the whole view is made; only "stretch" (see module doc)

    def __post_init__(self) -> None:
        if self.input_size < 16:
            raise ValueError(f"input_size must be >= 16, got {self.input_size}")
        if not 0 <= self.crops <= len(CROP_CENTRES):
            raise ValueError(f"crops must be in 0..{len(CROP_CENTRES)}, got {self.crops}")
        if self.detail_side and self.detail_side < self.input_size:
            raise ValueError(f"detail_side ({self.detail_side}) must be 0 or >= input_size ({self.input_size})")
        if self.resize != "stretch":
            raise ValueError(f"unknown resize mode {self.resize!r}")

    @property
    def views(self) -> int:
        return 1 + self.crops

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessSpec:
        return cls(**{k: (v if k == "resize" else int(v)) for k, v in d.items() if k in cls.__dataclass_fields__})


def _crop(img: Image.Image, size: int, centre: tuple[float, float]) -> np.ndarray:
    w, h = img.size
    left = int(round(centre[0] * w - size / 2))
    top = int(round(centre[1] * h - size / 2))
    left = min(max(left, 0), w - size)
    top = min(max(top, 0), h - size)
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def preprocess(
    pixels: np.ndarray, spec: PreprocessSpec, centres: Sequence[tuple[float, float]] | None = None
) -> np.ndarray:
    """One RGB frame ``(H, W, 3)`` uint8 -> model input ``(V, S, S, 3)`` uint8.

    ``centres`` overrides the crop centres (training jitters them); serving uses the defaults.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {pixels.shape} {pixels.dtype}")
    s = spec.input_size
    img = Image.fromarray(pixels)
    views = [np.asarray(img.resize((s, s), Image.Resampling.BILINEAR), dtype=np.uint8)]
    if spec.crops:
        w, h = img.size
        short = min(w, h)
        target = spec.detail_side or short
        target = max(target, s)  # never crop more than the creative has
        if short != target:
            scale = target / short
            img = img.resize((max(s, round(w * scale)), max(s, round(h * scale))), Image.Resampling.BILINEAR)
        for c in (centres or CROP_CENTRES)[: spec.crops]:
            views.append(_crop(img, s, c))
    return np.stack(views)  # (V, S, S, 3)


def preprocess_batch(frames: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """Several frames -> ``(N, V, S, S, 3)`` uint8."""
    if not frames:
        return np.zeros((0, spec.views, spec.input_size, spec.input_size, 3), dtype=np.uint8)
    return np.stack([preprocess(f, spec) for f in frames])
