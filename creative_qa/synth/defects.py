"""Defects of taxonomy v1, each applied at a chosen severity, labelled by DESIGN.md's rule.

Every defect has a *control* value (what the generator picks: a blur sigma, a JPEG
quality) and returns the *measured* value its label rule is stated in (for
exposure the fraction of newly clipped pixels, or the mean luma actually reached).
The label is the rule applied to the measured value, so a severity just under a
threshold is a negative and the model has to learn the boundary.

Images here are float32 ``(H, W, 3)`` arrays in [0, 1].
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from creative_qa.synth.fonts import font

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

BLUR_KERNELS = ("gaussian", "box", "motion")
NOISE_KINDS = ("gaussian", "uniform", "chroma")
JPEG_SUBSAMPLING = (0, 2)  # 4:4:4 and 4:2:0


def luma(x: np.ndarray) -> np.ndarray:
    return x @ LUMA


def to_pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8))


def from_pil(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


@dataclass(frozen=True)
class Defect:
    """One defect: how to apply it and the rule that labels it."""

    name: str
    threshold: float  # on the measured value
    worse_above: bool  # label is measured >= threshold (else measured <= threshold)
    positive: tuple[float, float]  # control range that lands over the threshold
    mild: tuple[float, float]  # control range that stays under it
    clean: float  # measured value of an untouched creative (for quality)
    apply: Callable[[np.ndarray, float, np.random.Generator, dict], tuple[np.ndarray, float]]
    fine_detail: bool = False  # its evidence is fine pixel detail, which shrinking a creative erases

    def label(self, measured: float) -> int:
        return int(measured >= self.threshold if self.worse_above else measured <= self.threshold)

    def badness(self, measured: float) -> float:
        """0 at the clean value, 0.5 at the threshold, 1 at twice the distance (capped)."""
        span = abs(self.threshold - self.clean) or 1.0
        return float(np.clip(0.5 * abs(measured - self.clean) / span, 0.0, 1.0))


# --- the operations -------------------------------------------------------------------


def _short(x: np.ndarray) -> int:
    return min(x.shape[0], x.shape[1])


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = x.shape[:2]
    p = np.pad(x, ((abs(dy), abs(dy)), (abs(dx), abs(dx)), (0, 0)), mode="edge")
    return p[abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]


def blur(x: np.ndarray, k: float, rng: np.random.Generator, opts: dict) -> tuple[np.ndarray, float]:
    """Blur with sigma = k * short side; the kernel shape varies, the sigma is what counts."""
    sigma = k * _short(x)
    kernel = opts.get("blur_kernel") or rng.choice(opts.get("blur_kernels", BLUR_KERNELS))
    if kernel == "gaussian":
        return from_pil(to_pil(x).filter(ImageFilter.GaussianBlur(radius=sigma))), k
    # NOTE: the box and motion kernels come in whole pixels: the label is their realised sigma, not the asked one.
    if kernel == "box":
        # A (2r+1) box has std sqrt(((2r+1)^2 - 1) / 12); pick r for the sigma (defocus-like).
        r = max(1, int(round((np.sqrt(12 * sigma**2 + 1) - 1) / 2)))
        return from_pil(to_pil(x).filter(ImageFilter.BoxBlur(r))), float(np.sqrt(((2 * r + 1) ** 2 - 1) / 12)) / _short(
            x
        )
    # Motion: average of L shifted copies along a line, one pixel apart: std sqrt((L^2 - 1) / 12) along it.
    length = max(2, int(round(np.sqrt(12 * sigma**2 + 1))))
    angle = rng.uniform(0, np.pi)
    acc = np.zeros_like(x)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, length):
        acc += _shift(x, int(round(t * np.sin(angle))), int(round(t * np.cos(angle))))
    return acc / length, float(np.sqrt((length**2 - 1) / 12)) / _short(x)


def low_resolution(x: np.ndarray, f: float, rng: np.random.Generator, opts: dict) -> tuple[np.ndarray, float]:
    h, w = x.shape[:2]
    img = to_pil(x).resize((max(4, round(w / f)), max(4, round(h / f))), Image.Resampling.BOX)
    up = [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS][rng.integers(3)]
    return from_pil(img.resize((w, h), up)), f


def jpeg(x: np.ndarray, q: float, rng: np.random.Generator, opts: dict) -> tuple[np.ndarray, float]:
    q = int(round(q))
    buf = io.BytesIO()
    to_pil(x).save(buf, format="JPEG", quality=q, subsampling=int(rng.choice(JPEG_SUBSAMPLING)))
    return from_pil(Image.open(buf)), float(q)


def noise(x: np.ndarray, std: float, rng: np.random.Generator, opts: dict) -> tuple[np.ndarray, float]:
    kind = opts.get("noise_kind") or rng.choice(opts.get("noise_kinds", NOISE_KINDS))
    shape = x.shape
    if kind == "gaussian":
        n = rng.normal(0.0, std, shape)
    elif kind == "uniform":
        a = std * np.sqrt(3.0)
        n = rng.uniform(-a, a, shape)
    else:  # luma noise plus independent colour noise, same total std per channel
        n = 0.7 * rng.normal(0.0, std, shape[:2] + (1,)) + 0.714 * rng.normal(0.0, std, shape)
    return np.clip(x + n.astype(np.float32), 0.0, 1.0), std


def overexpose(x: np.ndarray, target: float, rng: np.random.Generator, opts: dict) -> tuple[np.ndarray, float]:
    """Raise gain (or lower gamma, then gain) until about ``target`` of pixels clip to white."""
    y = x ** rng.uniform(0.6, 0.9) if rng.random() < 0.5 else x
    before = luma(x) >= 0.98
    lum = luma(y)
    free = lum[~before]
    if free.size == 0:
        return x, 0.0
    q = max(float(np.quantile(free, 1.0 - min(target, 0.99))), 1e-3)
    out = np.clip(y * (0.98 / q * 1.01), 0.0, 1.0)
    # Highlights blow out to white, as a clipped sensor's do: a saturated colour never reaches white by
    # gain alone (its other channels stay low), so the pixels over the quantile are washed to white.
    out[lum >= q] = 1.0
    clipped = (luma(out) >= 0.98) & ~before
    return out, float(clipped.mean())


def underexpose(x: np.ndarray, target: float, rng: np.random.Generator, opts: dict) -> tuple[np.ndarray, float]:
    """Lower gain (optionally raise gamma) to reach mean luma ``target`` (in 0-255 units)."""
    y = x ** rng.uniform(1.1, 1.6) if rng.random() < 0.5 else x
    gain = (target / 255.0) / max(float(luma(y).mean()), 1e-3)
    out = np.clip(y * min(gain, 1.0), 0.0, 1.0)
    return out, float(luma(out).mean() * 255.0)


def low_contrast(x: np.ndarray, a: float, rng: np.random.Generator, opts: dict) -> tuple[np.ndarray, float]:
    lum = luma(x)
    s0 = float(lum.std())
    out = np.clip(lum.mean() + a * (x - lum.mean()), 0.0, 1.0)
    return out, float(luma(out).std() / s0) if s0 > 1e-6 else 1.0


def letterbox(x: np.ndarray, t: float, rng: np.random.Generator, opts: dict) -> tuple[np.ndarray, float]:
    """Squeeze the design and add uniform bars on two opposite sides totalling ``t``."""
    h, w = x.shape[:2]
    colour = np.array([0, 0, 0] if rng.random() < 0.7 else rng.uniform(0, 1, 3), dtype=np.float32)
    out = np.empty_like(x)
    out[:] = colour
    if rng.random() < 0.5:  # top and bottom bars
        bar = int(round(h * t / 2))
        inner = h - 2 * bar
        out[bar : bar + inner] = from_pil(to_pil(x).resize((w, inner), Image.Resampling.BILINEAR))
        return out, 2 * bar / h
    bar = int(round(w * t / 2))
    inner = w - 2 * bar
    out[:, bar : bar + inner] = from_pil(to_pil(x).resize((inner, h), Image.Resampling.BILINEAR))
    return out, 2 * bar / w


WATERMARK_WORDS = ("SAMPLE", "PREVIEW", "© STOCK", "DRAFT", "PROOF")


def watermark(x: np.ndarray, alpha: float, rng: np.random.Generator, opts: dict) -> tuple[np.ndarray, float]:
    """Blend a mark that is not part of the design (tiled or one large diagonal word)."""
    h, w = x.shape[:2]
    mask = Image.new("L", (w * 2, h * 2), 0)
    d = ImageDraw.Draw(mask)
    word = str(rng.choice(WATERMARK_WORDS))
    s = _short(x)
    if rng.random() < 0.5:
        f = font(rng, int(s * rng.uniform(0.22, 0.32)), opts.get("fonts"))
        d.text((w, h), word, fill=255, font=f, anchor="mm")  # the centre, once rotated and cropped
    else:
        f = font(rng, int(s * rng.uniform(0.09, 0.13)), opts.get("fonts"))
        step = int(s * 0.35)
        for yy in range(0, h * 2, step):
            for xx in range((yy // step % 2) * step // 2, w * 2, step * 2):
                d.text((xx, yy), word, fill=255, font=f)
    mask = mask.rotate(rng.uniform(20, 45), resample=Image.Resampling.BILINEAR).crop(
        (w // 2, h // 2, w // 2 + w, h // 2 + h)
    )
    m = np.asarray(mask, dtype=np.float32)[..., None] / 255.0 * alpha
    # Usually the tone that stands out from the design (white on dark, dark grey on light).
    dark_design = float(luma(x).mean()) < 0.55
    colour = np.float32(1.0 if dark_design == (rng.random() < 0.8) else 0.15)
    return x * (1 - m) + colour * m, alpha


def pixelate(x: np.ndarray, b: float, rng: np.random.Generator, opts: dict) -> tuple[np.ndarray, float]:
    h, w = x.shape[:2]
    px = max(2, int(round(b * _short(x))))
    small = to_pil(x).resize((max(1, round(w / px)), max(1, round(h / px))), Image.Resampling.BOX)
    return from_pil(small.resize((w, h), Image.Resampling.NEAREST)), px / _short(x)


# --- the table ------------------------------------------------------------------------

DEFECTS: dict[str, Defect] = {
    d.name: d
    for d in [
        Defect("blurry", 0.006, True, (0.0066, 0.02), (0.001, 0.004), 0.0, blur, fine_detail=True),
        Defect("low_resolution", 3.0, True, (3.1, 6.0), (1.25, 2.2), 1.0, low_resolution, fine_detail=True),
        Defect("jpeg_artifacts", 20.0, False, (4, 20), (40, 85), 95.0, jpeg, fine_detail=True),
        Defect("noisy", 12 / 255, True, (13 / 255, 40 / 255), (2 / 255, 7 / 255), 0.0, noise, fine_detail=True),
        Defect("overexposed", 0.25, True, (0.3, 0.7), (0.03, 0.15), 0.0, overexpose),
        Defect("underexposed", 60.0, False, (18.0, 56.0), (72.0, 105.0), 128.0, underexpose),
        Defect("low_contrast", 0.35, False, (0.12, 0.33), (0.5, 0.8), 1.0, low_contrast),
        Defect("letterboxed", 0.12, True, (0.13, 0.35), (0.02, 0.07), 0.0, letterbox),
        Defect("watermark", 0.15, True, (0.18, 0.5), (0.02, 0.06), 0.0, watermark),
        Defect("pixelated", 0.02, True, (0.022, 0.05), (0.004, 0.011), 0.0, pixelate, fine_detail=True),
    ]
}
# text_heavy is decided when the design is rendered (it is a layout property):
TEXT_HEAVY_THRESHOLD = 0.20

# The order defects are applied in: layout first, then resampling, tone, noise, JPEG last.
ORDER = (
    "letterboxed",
    "watermark",
    "pixelated",
    "low_resolution",
    "blurry",
    "overexposed",
    "underexposed",
    "low_contrast",
    "noisy",
    "jpeg_artifacts",
)
