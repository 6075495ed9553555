"""The one shared preprocessing function: what the model sees of a creative.

Shrinking a whole creative to a small square erases the very evidence of blur,
noise, JPEG blocks and pixelation, while layout defects (letterbox bars, text
coverage, exposure) need the whole frame. So the model sees ``PreprocessSpec.views`` views of
``input_size`` x ``input_size`` uint8 RGB pixels:

* view 0: the whole creative, stretched to the square (no padding: padding would
  look exactly like letterbox bars);
* views 1..crops: detail crops taken from the creative rescaled so its short side
  is ``detail_side`` pixels. Blur, pixelation and letterbox bars are defined relative
  to the creative's own size (DESIGN.md), so a fixed short side keeps their scale
  constant from a 256 px thumbnail to a 1080 px original; ``detail_side=0`` takes
  crops at native size;
* then ``native_crops`` views: crops at the creative's own pixels. Noise, JPEG
  blocks and the softness an upscale leaves are pixel-level evidence that rescaling a
  1080 px creative to 256 averages away (``benchmarks/scale_sweep.py`` measures it);
  these crops keep it. They alternate between the most edge energy (an upscale's soft
  ramps, JPEG ringing) and the median (smooth areas, where noise and JPEG blocks show).
* with ``grid_view``, a last view that is not a picture: the creative's JPEG block-grid
  signature (``grid_view``), three numbers as uniform colour planes. A JPEG's blocks are
  sparse evidence on a flat vector design: they show only next to edges and on gradients,
  rarely inside any one crop. Folded over the whole creative's native pixels, they are
  plain: the mean luma step across every 8th column and row stands out against the
  other seven positions. With ``grid_profile`` the view carries three more numbers, read
  from the same window: how the luma's step energy grows from 1 to 2, 4 and 8 px steps
  (``scale_profile``). Steps, noise and soft ramps grow differently, at the creative's own
  pixels: an upscale's ramps span the factor's pixels at any size, where a rescaled crop of a
  large creative shows none of them. With ``text_cover`` it also carries the share of the creative
  covered by text-line boxes (``text_lines``), measured on the whole creative at ``TEXT_SIDE`` px: how
  much of a creative is text is a whole-creative property (``text_heavy``) that neither the 64 px whole
  view (too small to read a line) nor the detail crops (placed on the edgiest windows, text or not) keep.

Where the crops go matters as much: blur, JPEG blocking and upscaling are invisible
on a flat area and plain at an edge. With ``crop_policy="detail"`` (the default) the
crops go to the windows with the most edge energy (the gradient magnitude summed
over the window, on a 4x-reduced luma map), greedily, without overlapping; with
``"fixed"`` they sit at fixed positions. Both are deterministic.

Training, export and serving all call ``preprocess``; the spec travels in the ONNX
metadata, so a scorer cannot disagree with the model it runs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import zip_longest

import numpy as np
from PIL import Image

# NOTE: bump when the views a spec gives change (a new window policy): view caches key on it.
VIEWS_VERSION = 7

# The grid view folds at most this many pixels square of a creative (on the block grid): bounded work
# and memory at any size. 512 (4,096 blocks) reads a 1,080 px creative in 1.1-1.4 ms, 1,024 in 3.8-6.5.
# Where: the window with the most edge energy ("edges"; a JPEG's quantisation shows where there is
# detail, not on flat areas) or the centre ("centre"). A spec written before a field existed keeps what
# its model was trained on (``PreprocessSpec.from_dict``): 1,024 px, then the centre.
GRID_REGION = 512
LEGACY_GRID_REGION = 1024
GRID_WINDOWS = ("edges", "centre")
GRID_CLIP = 16  # luma steps above this (edges) are clipped, so a few strong edges cannot drown the grid

# Crop centres as fractions of (width, height); the first `crops` are used.
CROP_CENTRES: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.28, 0.3), (0.72, 0.7), (0.28, 0.7), (0.72, 0.3))


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: int = 128  # side of every view, pixels
    crops: int = 2  # detail crops next to the whole view
    detail_side: int = 256  # short side the creative is rescaled to before cropping; 0 = native
    resize: str = "stretch"  # how the whole view is made; only "stretch" (see module doc)
    crop_policy: str = "detail"  # "detail": crops where the edges are; "fixed": CROP_CENTRES
    native_crops: int = 0  # crops at the creative's own pixels, after the detail crops
    grid_view: int = 0  # 1: a last view with the creative's JPEG block-grid signature (see grid_view)
    grid_region: int = GRID_REGION  # ... read over at most this many pixels square of the creative
    grid_window: str = "edges"  # ... placed where the edges are ("edges") or at the centre ("centre")
    grid_profile: int = 1  # 1: the grid view also carries the window's step-energy profile (scale_profile)
    # 1: the picture views are made from the creative box-reduced by an integer factor, its short side kept at
    # twice what they sample or more (``reduced``), the whole view from the detail crops' picture; the grid view's
    # window is found there too; 0: all from the full-size creative (every model from before the field).
    # The same views in kind, at a fraction of the CPU.
    reduce: int = 1
    # 1: with ``grid_profile``, the grid view also carries the share of the creative covered by text-line boxes
    # (``text_lines``, at ``TEXT_SIDE`` px); 0: not (every model from before the field: its ring holds 128).
    text_cover: int = 1

    def __post_init__(self) -> None:
        if self.input_size < 16:
            raise ValueError(f"input_size must be >= 16, got {self.input_size}")
        if not 0 <= self.crops <= len(CROP_CENTRES):
            raise ValueError(f"crops must be in 0..{len(CROP_CENTRES)}, got {self.crops}")
        if not 0 <= self.native_crops <= len(CROP_CENTRES):
            raise ValueError(f"native_crops must be in 0..{len(CROP_CENTRES)}, got {self.native_crops}")
        if self.grid_view not in (0, 1):
            raise ValueError(f"grid_view must be 0 or 1, got {self.grid_view}")
        if self.grid_profile not in (0, 1):
            raise ValueError(f"grid_profile must be 0 or 1, got {self.grid_profile}")
        if self.reduce not in (0, 1):
            raise ValueError(f"reduce must be 0 or 1, got {self.reduce}")
        if self.text_cover not in (0, 1):
            raise ValueError(f"text_cover must be 0 or 1, got {self.text_cover}")
        if self.grid_region < 16 or self.grid_region % 8:
            raise ValueError(f"grid_region must be a multiple of 8 and at least 16, got {self.grid_region}")
        if self.grid_window not in GRID_WINDOWS:
            raise ValueError(f"unknown grid_window {self.grid_window!r} ({', '.join(GRID_WINDOWS)})")
        if self.detail_side and self.detail_side < self.input_size:
            raise ValueError(f"detail_side ({self.detail_side}) must be 0 or >= input_size ({self.input_size})")
        if self.resize != "stretch":
            raise ValueError(f"unknown resize mode {self.resize!r}")
        if self.crop_policy not in ("detail", "fixed"):
            raise ValueError(f"unknown crop_policy {self.crop_policy!r} (detail, fixed)")

    @property
    def views(self) -> int:
        return 1 + self.crops + self.native_crops + self.grid_view

    @property
    def picture_side(self) -> int | None:
        """The smallest short side the picture views (whole, detail crops) are made from without changing
        them: twice what they sample (``detail_side``, or ``input_size`` without crops), which leaves the
        final bilinear resize its anti-aliasing (at one times, a box reduction does the anti-aliasing and
        the detail crops' windows move with the creative's size); ``None`` when the detail crops are at
        native size."""
        if self.crops and not self.detail_side:
            return None
        return 2 * (self.detail_side if self.crops else self.input_size)

    @property
    def decode_min_side(self) -> int | None:
        """The smallest short side decoding may reduce a creative to without changing what the model sees.

        Detail crops are cut after rescaling the short side to ``detail_side`` (the whole view
        needs only ``input_size``); twice that leaves the final resize its anti-aliasing margin.
        Native-size crops (``detail_side=0``, or ``native_crops``) and the grid view need the full
        resolution: ``None``.
        """
        if self.native_crops or self.grid_view:
            return None
        return self.picture_side

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessSpec:
        text = ("resize", "crop_policy", "grid_window")
        kw = {k: (v if k in text else int(v)) for k, v in d.items() if k in cls.__dataclass_fields__}
        if kw.get("grid_view") and "grid_region" not in kw:  # a model from before the field: it read 1,024
            kw["grid_region"] = LEGACY_GRID_REGION
        if kw.get("grid_view") and "grid_window" not in kw:  # ... and at the centre
            kw["grid_window"] = "centre"
        if "grid_profile" not in kw:  # ... and carried no step-energy profile
            kw["grid_profile"] = 0
        if "reduce" not in kw:  # ... and made its picture views from the full-size creative
            kw["reduce"] = 0
        if "text_cover" not in kw:  # ... and read no text cover
            kw["text_cover"] = 0
        return cls(**kw)


def _crop(img: Image.Image, size: int, centre: tuple[float, float]) -> np.ndarray:
    w, h = img.size
    left = int(round(centre[0] * w - size / 2))
    top = int(round(centre[1] * h - size / 2))
    left = min(max(left, 0), w - size)
    top = min(max(top, 0), h - size)
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _window_energy(img: Image.Image, size: int, f: int = 4) -> np.ndarray | None:
    """Edge energy summed over every ``size`` window (on a ``f``x-reduced luma map): ``(H-k+1, W-k+1)``."""
    w, h = img.size
    small = np.asarray(img.convert("L").resize((max(1, w // f), max(1, h // f)), Image.Resampling.BOX), np.float32)
    gy, gx = np.abs(np.diff(small, axis=0))[:, :-1], np.abs(np.diff(small, axis=1))[:-1, :]
    energy = gx + gy
    k = max(1, size // f)
    if energy.shape[0] < k or energy.shape[1] < k:
        return None
    return _window_sums(energy, k, k)


def _window_sums(a: np.ndarray, ky: int, kx: int) -> np.ndarray:
    """The sum of ``a`` over every ``ky`` x ``kx`` window (an integral image): ``(H-ky+1, W-kx+1)``."""
    ii = np.pad(a.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return ii[ky:, kx:] - ii[:-ky, kx:] - ii[ky:, :-kx] + ii[:-ky, :-kx]


def _greedy(score: np.ndarray, n: int, img_size: tuple[int, int], size: int, f: int = 4) -> list[tuple[float, float]]:
    """Centres of the ``n`` best-scored non-overlapping windows (``score`` is overwritten)."""
    w, h = img_size
    k = max(1, size // f)
    out = []
    for _ in range(n):
        y, x = np.unravel_index(int(np.argmax(score)), score.shape)
        out.append(((x * f + size / 2) / w, (y * f + size / 2) / h))
        # NOTE: suppress every window overlapping this one, so crops see different places.
        score[max(0, y - k + 1) : y + k, max(0, x - k + 1) : x + k] = -np.inf
        if not np.isfinite(score.max()):
            break
    return out + list(CROP_CENTRES[len(out) : n])


def _median_score(win: np.ndarray) -> np.ndarray:
    return -np.abs(win - np.median(win))


def detail_centres(img: Image.Image, size: int, n: int, median: bool = False) -> list[tuple[float, float]]:
    """Centres (fractions of width, height) of ``n`` non-overlapping ``size`` windows with the most edge
    energy (``median``: the energy nearest the median window's)."""
    win = _window_energy(img, size)
    if win is None:
        return list(CROP_CENTRES[:n])
    return _greedy(_median_score(win) if median else win, n, img.size, size)


def native_centres(img: Image.Image, size: int, n: int) -> list[tuple[float, float]]:
    """Windows for native-pixel crops, alternating between the edges (where an upscale leaves its soft
    ramps and JPEG its ringing) and the median edge energy (smooth areas: noise, JPEG blocks)."""
    win = _window_energy(img, size)  # NOTE: once, for both searches: this map is of the full-size creative
    if win is None:
        edges, smooth = list(CROP_CENTRES[: (n + 1) // 2]), list(CROP_CENTRES[: n // 2])
    else:
        smooth = _greedy(_median_score(win), n // 2, img.size, size)
        edges = _greedy(win, (n + 1) // 2, img.size, size)
    return [c for pair in zip_longest(edges, smooth) for c in pair if c is not None][:n]


def grid_fold(luma: np.ndarray, clip: int = GRID_CLIP) -> np.ndarray:
    """Mean clipped luma step at each position of the 8 px block grid: ``(2, 8)`` float32.

    ``[0, c]`` is the mean ``|y[i, j+1] - y[i, j]|`` over every row and the columns ``j % 8 == c``
    (horizontal steps), ``[1, r]`` the same for vertical steps across rows ``i % 8 == r``. A JPEG's
    block edges make position 7 stand out. ``luma``: ``(H, W)``, its origin on the block grid.
    """
    y = np.asarray(luma, dtype=np.uint8)
    out = np.zeros((2, 8), np.float32)
    for k, axis in enumerate((1, 0)):
        a, b = (y[:, 1:], y[:, :-1]) if axis == 1 else (y[1:], y[:-1])
        step = np.maximum(a, b)
        step -= np.minimum(a, b)  # |a - b| in uint8, without a wider copy (the serving path runs this per creative)
        np.minimum(step, clip, out=step)
        profile = step.sum(axis=1 - axis, dtype=np.int64)  # per column (horizontal) or row (vertical)
        pos = np.arange(len(profile)) % 8
        count = np.maximum(np.bincount(pos, minlength=8), 1) * step.shape[1 - axis]
        out[k] = np.bincount(pos, weights=profile, minlength=8) / count
    return out


# the 8-point DCT's first AC basis vector
_DCT1 = (np.sqrt(2.0 / 8.0) * np.cos(np.pi * (2 * np.arange(8) + 1) / 16.0)).astype(np.float32)
_DOWN = np.stack([np.ones(8, np.float32), _DCT1])


def quantisation_evidence(luma: np.ndarray, prior: float = 8.0) -> float:
    """How coarsely the lowest AC coefficients of the 8x8 luma blocks are quantised: 0 (no sign) .. 1.

    A JPEG at quality q stores the (0, 1) and (1, 0) luma coefficients as multiples of
    ``11 * 50 / q`` and ``12 * 50 / q`` levels (the standard luminance table, scaled): at q <= 20 no
    block has one between about 4 and 22 in size, at q >= 40 or without a JPEG many do. The
    evidence is the share of clearly non-zero coefficients outside that gap, shrunk towards 0 by
    ``prior`` coefficients so a flat creative (few non-zero ones) shows none; a creative without a
    JPEG reads about 0.5, a coarse JPEG near 1. ``luma``: ``(H, W)``, H and W
    multiples of 8, its origin on the block grid.
    """
    h, w = luma.shape
    y = np.asarray(luma, dtype=np.float32).reshape(h // 8, 8, w)
    # (0, 1): the DC basis (1/sqrt 8) down each block's columns, the first AC one across them; (1, 0) the
    # transpose. One contraction down the block rows (plain sum, first AC basis) gives both without a
    # 2-D DCT; the rest works on an 8x smaller array.
    down = np.einsum("ki,biw->kbw", _DOWN, y)  # (2, H/8, W)
    cols = down[0].reshape(h // 8, w // 8, 8) @ _DCT1
    rows = down[1].reshape(h // 8, w // 8, 8).sum(axis=-1)
    low = np.abs(np.concatenate([cols.ravel(), rows.ravel()])) / np.sqrt(8.0)
    nonzero = int((low > 4.0).sum())
    gap = int(((low > 4.0) & (low < 22.0)).sum())
    return (nonzero - gap) / (nonzero + prior)


def grid_features(fold: np.ndarray, evidence: float, eps: float = 0.5) -> np.ndarray:
    """Three numbers of a creative's JPEG evidence, each as a uint8 (``grid_view``):

    * how far the steps across the 8th column and row (where a JPEG's blocks meet; a decoded JPEG's
      grid starts at its corner) exceed the mean step of the fold (``grid_fold``), a ratio on a log
      scale: 64 = none, +64 per doubling;
    * ``quantisation_evidence`` x 255;
    * the same excess in luma levels, 128 = none (a ratio over a flat image means little).
    """
    lift = ((fold[:, 7] + eps) / (fold.mean(axis=1) + eps)).mean()
    levels = (fold[:, 7] - fold[:, :7].mean(axis=1)).mean()
    values = [64.0 + 64.0 * np.log2(lift), 255.0 * evidence, 128.0 + 32.0 * levels]
    return np.clip(np.array(values) + 0.5, 0, 255).astype(np.uint8)


def edgiest_window(img: Image.Image, rw: int, rh: int) -> tuple[int, int] | None:
    """``(left, top)`` of the ``rw`` x ``rh`` window of ``img`` with the most edge energy, its corner on
    the 8 px block grid (every such corner is a candidate); ``None`` when the window is the whole image
    or nothing has edges (no window is better than another).

    The energy is the sum of horizontal luma steps over every 4th pixel of every 4th row (it ranks
    the windows' content, not single pixels; a nearest-neighbour reduction reads only those):
    about 0.6-0.8 ms on a 1,080 px creative.
    """
    w, h = img.size
    ny, nx = h // 8, w // 8  # 8 px cells: 2 x 2 samples each
    ky, kx = max(min(rh // 8, ny), 1), max(min(rw // 8, nx), 1)
    if (rw >= w and rh >= h) or ny == 0 or nx == 0:
        return None
    sub = np.asarray(img.resize((w // 4, h // 4), Image.Resampling.NEAREST).convert("L"), dtype=np.int16)
    sub = sub[: ny * 2, : nx * 2]
    step = np.abs(np.diff(sub, axis=1, append=sub[:, -1:]))
    energy = step.reshape(ny, 2, nx, 2).sum(axis=(1, 3), dtype=np.int64)
    windows = _window_sums(energy, ky, kx)  # every ky x kx cell window's sum
    if not windows.any():
        return None
    iy, ix = np.unravel_index(int(np.argmax(windows)), windows.shape)
    return min(int(ix) * 8, (w - rw) // 8 * 8), min(int(iy) * 8, (h - rh) // 8 * 8)


def scale_profile(luma: np.ndarray, eps: float = 1.0) -> np.ndarray:
    """How a luma window's step energy grows with the step: ``(3,)`` uint8, one number per doubling.

    ``E_n`` is the mean squared luma difference between pixels ``n`` apart (across rows and
    columns), for n = 1, 2, 4, 8; each number is ``log2(E_2n / E_n)`` as ``64 + 64 x`` (clipped).
    Noise is white: its steps do not grow with the distance (0). Sharp edges count once per
    pixel of distance (1). A soft ramp over ``L`` pixels grows with the square of the distance up
    to ``L`` (2): an upscale by 3-6x puts ramps of 3-6 px at the creative's own pixels, whatever
    its size, so the first two numbers rise toward 2 where a sharp or noisy creative's stay
    near 1 or 0. Blur makes ramps too, over a size-relative width; the picture views show that.
    """
    # every other row (for steps along rows) and column (down columns) reads as well as all, at half the cost
    across, down = luma[::2].astype(np.float32), luma[:, ::2].astype(np.float32)
    energy = []
    for n in (1, 2, 4, 8):
        steps = [d for d in (across[:, n:] - across[:, :-n], down[n:] - down[:-n]) if d.size]
        energy.append(sum(float(np.einsum("ij,ij->", d, d)) / d.size for d in steps) / 2 + eps)
    ratios = np.log2(np.array(energy[1:]) / np.array(energy[:-1]))
    return np.clip(64.0 + 64.0 * ratios + 0.5, 0, 255).astype(np.uint8)


# The grid view's neutral numbers: no lift, no quantisation evidence, no excess; flat steps.
GRID_NEUTRAL = (64, 0, 128)
PROFILE_NEUTRAL = (64, 64, 64)


TEXT_SIDE = 256  # short side at which text lines are found (``text_lines``)
TEXT_LEVELS = 400.0  # the grid view stores a text cover as ``TEXT_LEVELS x share`` (0.25 % a level, 20 % = 80)
NO_TEXT_COVER = 128  # what the size ring holds there without ``text_cover`` (every model from before the field)


@functools.cache
def _cv2():
    """OpenCV, single-threaded (set once, on first use): its worker pool buys nothing on a 256 px picture, and a
    pool running when a process forks can hang the child (``creative_qa.media`` keeps FFmpeg's out for the same
    reason)."""
    import cv2

    cv2.setNumThreads(1)
    return cv2


def text_lines(luma: np.ndarray) -> tuple[float, float]:
    """Text-line boxes in a uint8 luma picture: ``(share of its area they cover, how many)``.

    Glyphs are strong edges on their background: a 3 px morphological gradient, thresholded by Otsu,
    closed along rows (9 x 1: the letters of a line join), then the connected regions shaped like a line
    of text (at least twice as wide as tall, 1.2-15 % of the picture's height, at least 40 % filled, not
    the picture's whole width). Measured on the creative at ``TEXT_SIDE`` px on its short side, so the
    line heights are relative to the creative, as ``text_heavy``'s rule is (DESIGN.md). With the resize, about
    0.55 ms of CPU per creative (``benchmarks/RESULTS.md``).
    """
    cv2 = _cv2()
    y = np.ascontiguousarray(luma, dtype=np.uint8)
    grad = cv2.morphologyEx(y, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    _, bw = cv2.threshold(grad, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    bw = cv2.morphologyEx(bw, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 1)))
    _, _, stats, _ = cv2.connectedComponentsWithStats(bw, connectivity=8)
    h, w = y.shape
    bw_, bh, px = stats[1:, 2], stats[1:, 3], stats[1:, 4]
    line = (bw_ >= 2.0 * bh) & (bh >= 0.012 * h) & (bh <= 0.15 * h) & (px >= 0.4 * bw_ * bh) & (bw_ < 0.98 * w)
    return float((bw_[line] * bh[line]).sum() / (h * w)), float(line.sum())


def text_cover(img: Image.Image) -> int:
    """The share of an RGB picture covered by text-line boxes (``text_lines``) at ``TEXT_SIDE`` px on its short
    side, as the grid view stores it: ``TEXT_LEVELS x share``, a uint8."""
    w, h = img.size
    if min(w, h) != TEXT_SIDE:
        r = TEXT_SIDE / min(w, h)
        img = img.resize((max(1, round(w * r)), max(1, round(h * r))), Image.Resampling.BILINEAR)
    share, _ = text_lines(np.asarray(img.convert("L")))
    return int(min(255.0, TEXT_LEVELS * share + 0.5))


def size_numbers(w: int, h: int, text: int | None = None) -> np.ndarray:
    """A creative's short and long side as ``(3,)`` uint8: ``32 x (log2(side) - 4)``, 32 per doubling
    from 16 px (0) to 4,096 px and over (255), then its ``text_cover`` (``NO_TEXT_COVER`` when not given)."""
    sides = np.log2(np.maximum([min(w, h), max(w, h)], 1)) - 4.0
    numbers = np.clip(32.0 * sides + 0.5, 0, 255)
    return np.append(numbers, NO_TEXT_COVER if text is None else text).astype(np.uint8)


def short_side_of(number: float) -> float:
    """The short side ``size_numbers`` encoded (within 2 %)."""
    return float(2.0 ** (number / 32.0 + 4.0))


def grid_view(
    img: Image.Image,
    size: int,
    region: int = GRID_REGION,
    window: str = "edges",
    profile: bool = False,
    search: tuple[Image.Image, int] | None = None,
    text: int | None = None,
) -> np.ndarray:
    """The grid view of an RGB image: ``(size, size, 3)`` uint8, each channel one of ``grid_features``.

    Numbers as planes, not a picture: a flip or a rotation of the view leaves it unchanged, and the
    model (``training.model.CreativeModel``) reads the numbers off single pixels. With ``profile``
    the view is square rings (by the distance to the nearest border, unchanged by a flip or a
    rotation): the outer eighth holds ``grid_features``, the next eighth the creative's size and
    ``text`` (``size_numbers``: training's defect synthesis reads the size to make a copy's crops as a
    creative of that size would show them; the model reads the text cover, not the size), and the inner
    square (from ``size // 4`` to ``size - size // 4``) the window's ``scale_profile``.

    ``search``: ``img`` reduced by an integer factor, and the factor (``reduced``): the ``"edges"`` window
    is found there (its corner scaled back to ``img`` and onto the block grid); the numbers are still read
    off ``img``.

    At most ``region`` pixels square are read, where the creative has the most edge energy
    (``window="edges"``: a JPEG's quantisation shows on detail, and the centre of a large creative
    is often flat) or at its centre (``"centre"``), its corner on the 8 px grid from the image's
    corner, where a decoded JPEG's blocks start. NOTE: only that grid is read: a JPEG cropped
    afterwards by other than a multiple of 8, or one so large that decoding halved it
    (``creative_qa.media.NATIVE_MAX_PIXELS``), shows little of its evidence here.
    """
    w, h = img.size
    rw, rh = min(w, region), min(h, region)
    if min(rw, rh) < 16:  # under two blocks: no grid to read (no lift, no evidence, no excess)
        values, steps = np.array(GRID_NEUTRAL, np.uint8), np.array(PROFILE_NEUTRAL, np.uint8)
    else:
        edges = None
        if window == "edges" and search is not None:
            small, k = search
            found = edgiest_window(small, -(-rw // k), -(-rh // k))
            if found is not None:
                edges = min(found[0] * k // 8 * 8, (w - rw) // 8 * 8), min(found[1] * k // 8 * 8, (h - rh) // 8 * 8)
        elif window == "edges":
            edges = edgiest_window(img, rw, rh)
        left, top = edges or ((w - rw) // 2 // 8 * 8, (h - rh) // 2 // 8 * 8)
        luma = np.asarray(img.crop((left, top, left + rw, top + rh)).convert("L"))
        values = grid_features(grid_fold(luma), quantisation_evidence(luma[: rh // 8 * 8, : rw // 8 * 8]))
        steps = scale_profile(luma) if profile else None
    view = np.broadcast_to(values, (size, size, 3)).copy()
    if profile:
        e, q = size // 8, size // 4
        view[e : size - e, e : size - e] = size_numbers(w, h, text)
        view[q : size - q, q : size - q] = steps
    return view


def reduced(img: Image.Image, min_side: int | None) -> tuple[Image.Image, int]:
    """``img`` box-reduced by the largest integer factor that keeps its short side at ``min_side`` or more,
    and the factor (1: ``img`` itself). A box reduction reads each pixel once; the views' bilinear resizes
    then work on a fraction of the pixels."""
    k = min(img.size) // min_side if min_side else 1
    return (img.reduce(k), k) if k >= 2 else (img, 1)


def preprocess(
    pixels: np.ndarray | Image.Image,
    spec: PreprocessSpec,
    centres: Sequence[tuple[float, float]] | None = None,
    pool: int = 0,
) -> np.ndarray:
    """One RGB frame, ``(H, W, 3)`` uint8 or an RGB PIL image -> model input ``(V, S, S, 3)`` uint8.

    Both give the same views; an image (what decoding makes of a still) is used as it is,
    without the two full-size copies an array costs (``Frame.source`` gives whichever the
    decoder had).

    ``centres`` overrides the crop centres; serving uses the defaults. ``pool > 0``
    (training only) appends ``pool`` further detail windows, the next-best by the same
    greedy edge-energy search, so a strong view can swap a crop for another window of
    the same creative: the result is ``(V + pool, S, S, 3)`` and its first ``V`` views
    are exactly what the scorer sees. Order: whole view, detail crops, native crops, grid view.
    """
    if isinstance(pixels, Image.Image):
        if pixels.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {pixels.mode}")
        img = pixels
    elif pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {pixels.shape} {pixels.dtype}")
    else:
        img = Image.fromarray(pixels)
    s = spec.input_size
    native = original = img  # the creative at its own pixels
    factor = 1
    if spec.reduce:
        img, factor = reduced(img, spec.picture_side)
    small = img
    whole = None if spec.reduce else np.asarray(img.resize((s, s), Image.Resampling.BILINEAR), dtype=np.uint8)
    if spec.crops:
        w, h = img.size
        short = min(w, h)
        target = spec.detail_side or short
        target = max(target, s)  # never crop more than the creative has
        if short != target:
            scale = target / short
            img = img.resize((max(s, round(w * scale)), max(s, round(h * scale))), Image.Resampling.BILINEAR)
        # NOTE: the greedy search is prefix-stable: one search gives the served windows, then the pool's.
        search = pool or (centres is None and spec.crop_policy == "detail")
        ranked = detail_centres(img, s, spec.crops + pool) if search else []
        if centres is None:
            centres = ranked if spec.crop_policy == "detail" else CROP_CENTRES
        centres = list(centres[: spec.crops])
        if pool:
            extra = ranked[spec.crops :]
            centres += [extra[i % len(extra)] for i in range(pool)] if extra else centres[:1] * pool
        served, extra = centres[: spec.crops], centres[spec.crops :]
    else:
        served, extra = [], []
    if whole is None:  # NOTE: from the picture the crops are cut from: it has every pixel the square needs
        whole = np.asarray(img.resize((s, s), Image.Resampling.BILINEAR), dtype=np.uint8)
    views = [whole]
    for c in served:
        views.append(_crop(img, s, c))
    if spec.native_crops:
        if min(native.size) < s:  # never crop more than the creative has: a tiny one is upscaled
            r = s / min(native.size)
            size = (max(s, round(native.width * r)), max(s, round(native.height * r)))
            native = native.resize(size, Image.Resampling.BILINEAR)
        for c in native_centres(native, s, spec.native_crops):
            views.append(_crop(native, s, c))
    if spec.grid_view:
        found = (small, factor) if factor > 1 else None  # the window is found on the reduced creative
        text = None
        if spec.grid_profile and spec.text_cover:  # the detail crops' picture where it is at TEXT_SIDE already
            text = text_cover(img if spec.crops and min(img.size) == TEXT_SIDE else small)
        views.append(grid_view(original, s, spec.grid_region, spec.grid_window, bool(spec.grid_profile), found, text))
    for c in extra:
        views.append(_crop(img, s, c))
    return np.stack(views)  # (V [+ pool], S, S, 3)


def preprocess_batch(frames: Sequence[np.ndarray | Image.Image], spec: PreprocessSpec) -> np.ndarray:
    """Several frames -> ``(N, V, S, S, 3)`` uint8."""
    if not frames:
        return np.zeros((0, spec.views, spec.input_size, spec.input_size, 3), dtype=np.uint8)
    return np.stack([preprocess(f, spec) for f in frames])
