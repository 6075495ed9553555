"""A foreign held-out split: defects made by an independent implementation.

The training pool's defects all come from ``creative_qa.synth.defects``. A model can
score well on the test split by learning that code's fingerprints (its three blur
kernels, its noise generators, PIL's JPEG at its two chroma subsamplings). Here every
defect is made again with other code and other kernels (scipy.ndimage, numpy,
FFmpeg's MJPEG encoder through PyAV), on a background and a font the training pool
never uses, and labelled by the DESIGN.md definitions from what was measured:

| tag | made here by |
| --- | --- |
| blurry | a defocus disc (scipy convolution), sigma of the disc = r / 2 |
| low_resolution | block-mean downscale, spline (order 3) upscale with scipy.ndimage.zoom |
| jpeg_artifacts | FFmpeg's MJPEG encoder (``qscale`` mapped from the libjpeg quality), 4:4:4 |
| noisy | Laplace-distributed noise, per channel, std set exactly |
| overexposed | a tone curve (1 - (1 - x)^k) then gain, until a share of pixels clips |
| underexposed | a gamma curve then gain to a mean luma |
| low_contrast | a blend towards the mean colour (not grey) |
| letterboxed | bars of a tinted colour, the design padded rather than squeezed |
| watermark | a semi-transparent outlined disc with a word, one place |
| pixelated | block means with numpy (``reduceat``) |
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

W = np.array([0.299, 0.587, 0.114], dtype=np.float32)
FOREIGN_FONT = "DejaVuSerif.ttf"
FOREIGN_BACKGROUND = "stripes"


def _luma(x: np.ndarray) -> np.ndarray:
    return x @ W


def _label(tag: str, measured: float) -> int:
    """The DESIGN.md rule for ``tag`` (``creative_qa.synth.defects.DEFECTS``, the one home of the thresholds)."""
    from creative_qa.synth.defects import DEFECTS

    return DEFECTS[tag].label(float(measured))


@dataclass(frozen=True)
class Degradation:
    name: str
    positive: tuple[float, float]  # parameter range over the threshold
    negative: tuple[float, float]  # parameter range under it (mild, a negative)


def blur(x, sigma_rel, rng):
    from scipy import ndimage

    s = min(x.shape[:2])
    r = max(1.0, 2.0 * sigma_rel * s)  # a disc of radius r has sigma ~ r / 2
    k = int(np.ceil(r))
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    disc = ((xx**2 + yy**2) <= r * r).astype(np.float32)
    disc /= disc.sum()
    out = np.stack([ndimage.convolve(x[..., c], disc, mode="reflect") for c in range(3)], -1)
    return out, _label("blurry", r / 2 / s)


def low_resolution(x, f, rng):
    from scipy import ndimage

    h, w = x.shape[:2]
    b = max(2, int(round(f)))
    hh, ww = h // b * b, w // b * b
    small = x[:hh, :ww].reshape(hh // b, b, ww // b, b, 3).mean((1, 3))
    up = np.clip(ndimage.zoom(small, (h / small.shape[0], w / small.shape[1], 1), order=3), 0, 1)
    return up[:h, :w], _label("low_resolution", b)


def jpeg(x, q, rng):
    """FFmpeg's MJPEG encoder at the qscale whose quantiser matches libjpeg quality ``q`` (50 / q for q < 50)."""
    import av

    q = int(round(q))
    qscale = int(np.clip(round(50.0 / max(q, 1)), 1, 31))
    h, w = x.shape[:2]
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray((x[: h - h % 2, : w - w % 2] * 255).astype(np.uint8)))
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mjpeg") as c:
        st = c.add_stream("mjpeg", rate=1)
        st.width, st.height, st.pix_fmt = frame.width, frame.height, "yuvj444p"
        st.codec_context.qmin = st.codec_context.qmax = qscale
        st.codec_context.options = {"qscale": str(qscale)}
        for p in st.encode(frame.reformat(format="yuvj444p")):
            c.mux(p)
        for p in st.encode():
            c.mux(p)
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32) / 255.0
    full = x.copy()
    full[: out.shape[0], : out.shape[1]] = out
    return full, _label("jpeg_artifacts", q)


def noisy(x, std, rng):
    n = rng.laplace(0.0, std / np.sqrt(2.0), x.shape).astype(np.float32)
    return np.clip(x + n, 0, 1), _label("noisy", std)


def overexposed(x, target, rng):
    before = _luma(x) >= 0.98
    y = 1 - (1 - x) ** rng.uniform(1.2, 1.8)
    free = _luma(y)[~before]
    if free.size == 0:
        return x, 0
    gain = 0.98 / max(float(np.quantile(free, 1 - min(target, 0.99))), 1e-3) * 1.01
    out = np.clip(y * gain, 0, 1)
    share = float(((_luma(out) >= 0.98) & ~before).mean())
    return out, _label("overexposed", share)


def underexposed(x, target, rng):
    y = x ** rng.uniform(1.2, 2.0)
    out = np.clip(y * min(1.0, (target / 255) / max(float(_luma(y).mean()), 1e-3)), 0, 1)
    return out, _label("underexposed", _luma(out).mean() * 255)


def low_contrast(x, a, rng):
    s0 = float(_luma(x).std())
    mean = x.reshape(-1, 3).mean(0)
    out = np.clip(mean + a * (x - mean), 0, 1)
    return out, int(s0 > 1e-6) and _label("low_contrast", _luma(out).std() / s0)


def letterboxed(x, t, rng):
    h, w = x.shape[:2]
    colour = rng.uniform(0.05, 0.3, 3).astype(np.float32)
    if rng.random() < 0.5:
        bar = int(round(w * t / 2))
        inner = np.asarray(Image.fromarray((x * 255).astype(np.uint8)).resize((w - 2 * bar, h)), np.float32) / 255
        out = np.concatenate([np.broadcast_to(colour, (h, bar, 3)), inner, np.broadcast_to(colour, (h, bar, 3))], 1)
        return out.astype(np.float32), _label("letterboxed", 2 * bar / w)
    bar = int(round(h * t / 2))
    inner = np.asarray(Image.fromarray((x * 255).astype(np.uint8)).resize((w, h - 2 * bar)), np.float32) / 255
    out = np.concatenate([np.broadcast_to(colour, (bar, w, 3)), inner, np.broadcast_to(colour, (bar, w, 3))], 0)
    return out.astype(np.float32), _label("letterboxed", 2 * bar / h)


def watermark(x, alpha, rng):
    from creative_qa.synth.fonts import font

    h, w = x.shape[:2]
    s = min(h, w)
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    r = s * rng.uniform(0.25, 0.4)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=max(2, int(s * 0.03)))
    d.text((cx, cy), "©", fill=255, font=font(rng, int(r), (FOREIGN_FONT,)), anchor="mm")
    m = np.asarray(mask, np.float32)[..., None] / 255 * alpha
    return x * (1 - m) + 1.0 * m, _label("watermark", alpha)


def pixelated(x, b_rel, rng):
    h, w = x.shape[:2]
    b = max(2, int(round(b_rel * min(h, w))))
    rows, cols = np.arange(0, h, b), np.arange(0, w, b)
    sums = np.add.reduceat(np.add.reduceat(x, rows, axis=0), cols, axis=1)
    counts = np.add.reduceat(np.add.reduceat(np.ones((h, w, 1), np.float32), rows, 0), cols, 1)
    blocks = sums / counts
    out = np.repeat(np.repeat(blocks, b, 0), b, 1)[:h, :w]
    return out, _label("pixelated", b / min(h, w))


OPS = {
    "blurry": (blur, (0.007, 0.02), (0.001, 0.004)),
    "low_resolution": (low_resolution, (3.2, 6.0), (1.5, 2.4)),
    "jpeg_artifacts": (jpeg, (5, 18), (45, 90)),
    "noisy": (noisy, (14 / 255, 40 / 255), (2 / 255, 7 / 255)),
    "overexposed": (overexposed, (0.32, 0.7), (0.03, 0.12)),
    "underexposed": (underexposed, (18.0, 52.0), (75.0, 105.0)),
    "low_contrast": (low_contrast, (0.12, 0.3), (0.5, 0.8)),
    "letterboxed": (letterboxed, (0.14, 0.35), (0.02, 0.07)),
    "watermark": (watermark, (0.2, 0.5), (0.02, 0.06)),
    "pixelated": (pixelated, (0.023, 0.05), (0.004, 0.011)),
}
# Defects are applied in the generator's order (bars and marks before blur, noise and JPEG last).


def make_foreign(out: Path, n: int, seed: int, size: int = 256, tags: list[str] | None = None) -> Path:
    """Write ``n`` foreign creatives and their clean labels; returns the manifest path."""
    from creative_qa.synth import ORDER, render_design
    from creative_qa.taxonomy import load_taxonomy

    tags = tags or load_taxonomy().tag_names
    folder = out / "foreign"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rng = np.random.default_rng([seed, 77, i])
        design = render_design(
            rng, size, text_heavy=rng.random() < 0.12, fonts=(FOREIGN_FONT,), backgrounds=(FOREIGN_BACKGROUND,)
        )
        x = np.asarray(design.image, np.float32)
        if x.max() > 1.5:
            x = x / 255.0
        labels = {t: 0 for t in tags} | {k: v for k, v in design.labels.items() if k in tags}
        for name in ORDER:
            if name not in tags or name not in OPS:
                continue
            fn, pos, neg = OPS[name]
            u = rng.random()
            if u < 0.12:
                x, labels[name] = fn(x, rng.uniform(*pos), rng)
            elif u < 0.2:
                x, labels[name] = fn(x, rng.uniform(*neg), rng)
        rel = f"foreign/{i:06d}.png"
        Image.fromarray(np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)).save(out / rel, compress_level=1)
        rows.append({"path": rel, **labels})
    manifest = out / "foreign.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest
