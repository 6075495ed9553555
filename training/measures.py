"""Classical measurements of a creative's views, computed inside the model (and so inside the ONNX graph).

A CNN pooled over its whole view knows *what* is in a picture better than *where*: uniform bars on two
opposite sides (``letterboxed``) look to it like any dark or flat area, and a mosaic's flat blocks like any
flat region. A few classical measurements carry that evidence directly, and on photographs the model never
saw they generalise where its learned features do not (``benchmarks/rules.py`` ranks real photos by the
same kind of measurement, and beat the model on these tags; ``benchmarks/RESULTS.md``). So the model reads
them as features next to its backbone's (``training.model.CreativeModel``, ``model.measures``), learned on
like any other: never a post-hoc rule.

They are computed from the views themselves, in torch, without gradients: the same numbers in training (on
augmented and defect-synthesised copies, which change them as they change the pixels), in the exported
graph and in serving; the preprocessing (``creative_qa.preprocess``) is unchanged. Every measurement is
invariant to the flips and 90-degree rotations the augmentations apply.

Each is scaled to about unit range (``scaled``), so the head's weight decay treats them alike:

* ``bar_share``: the share of the whole view's height (or width) taken by uniform bars of the corners'
  colour on two opposite sides (0 without bars on both sides), rows counted as uniform at two
  tolerances: ``benchmarks/rules.py``'s (a spread under 4 grey levels, a mean within 6 of the corner's)
  and a strict one (0.5 and 1: a flat background of the design's own, or a dim photograph, is rarely
  that flat at the view's size; chosen on the training pool's clean labels, ``benchmarks/measures.py``);
* ``bar_side``: the larger of the two sides' bars alone (a bar on one side only, or a frame);
* ``mosaic``: in the detail crops' textured places, the share of pixels equal to their four neighbours
  (inside a mosaic's flat blocks; natural texture and noise rarely are);
* ``text_edges``: the share of the detail crops' pixels on strong edges (a 3 px morphological gradient
  over 130 grey levels: glyphs on their background; a photograph's texture rarely is that sharp),
  closed along rows or columns, whichever joins more (letters of a line join, in any orientation of
  the view): how much of the creative's detail is text;
* ``noise``: the detail crops' noise level, Immerkaer's estimator (the mean absolute response of a
  Laplacian difference that cancels smooth ramps), as log(1 + sigma);
* ``luma_mean``, ``clipped``, ``luma_spread``: the whole view's brightness, share of clipped white and
  spread (exposure and contrast).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NAMES = ("bar_share", "bar_share_strict", "bar_side", "mosaic", "text_edges", "noise", "luma_mean", "clipped",
         "luma_spread")  # fmt: skip
COUNT = len(NAMES)

_LUMA = (0.299, 0.587, 0.114)
FLAT = (4.0, 6.0)  # a bar row's spread (grey levels) is under the first, its mean within the second of the corner's
STRICT_FLAT = (0.5, 1.0)  # ... and the strict tolerance
MIN_BAR = 0.02  # each side's bar at least this share of the side to count as a letterbox
EQUAL = 2.0  # neighbours within this (grey levels) are equal (a mosaic block's inside)
TEXTURED = 6.0  # local spread (15 px window) over this is a textured place
TEXT_EDGE = 130.0  # a 3 px morphological gradient over this is a glyph's edge ...
TEXT_CLOSE = 5  # ... and edges this close along a row join
_LAPLACE = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))


# NOTE: elementwise arithmetic only (no matmul, no convolution): under mixed precision those would run in
# 16 bits, too coarse for neighbours within 2 grey levels of 255.
def _luma(x: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` -> ``(...)``."""
    return x[..., 0] * _LUMA[0] + x[..., 1] * _LUMA[1] + x[..., 2] * _LUMA[2]


def _run(flat: torch.Tensor) -> torch.Tensor:
    """``(N, L)`` bool -> the length of the leading run of True, ``(N,)`` (``cumsum``, not ``cumprod``: ONNX has
    no cumulative product)."""
    return (torch.cumsum((~flat).to(torch.int32), dim=1) == 0).sum(1)


def _bars(x: torch.Tensor, tolerance: tuple[float, float] = FLAT) -> tuple[torch.Tensor, torch.Tensor]:
    """Bars across the first spatial axis of ``(N, L, M, 3)``: (two-sided share, larger side's share), ``(N,)`` each."""
    n = x.shape[1]
    mean = x.mean(dim=2)  # (N, L, 3)
    # NOTE: centred before squaring: E[x^2] - E[x]^2 cancels in float32 at bright levels, near the strict tolerance
    spread = (x - mean[:, :, None, :]).pow(2).mean(dim=2).sqrt().amax(-1)  # (N, L)
    flat = spread < tolerance[0]
    first = flat & ((mean - x[:, :1, 0, :]).abs().amax(-1) < tolerance[1])  # rows of the first corner's colour
    last = flat & ((mean - x[:, -1:, -1, :]).abs().amax(-1) < tolerance[1])
    a, b = _run(first), _run(torch.flip(last, dims=[1]))
    both = (torch.minimum(a, b) >= max(1, math.ceil(MIN_BAR * n))) & (a + b < n)
    share = torch.where(both, (a + b).to(x.dtype) / n, torch.zeros_like(mean[:, 0, 0]))
    side = torch.clamp(torch.maximum(a, b), max=n).to(x.dtype) / n
    return share, side


def _mosaic(y: torch.Tensor) -> torch.Tensor:
    """``(B, 1, S, S)`` luma -> ``(B,)``: in textured places, the share of pixels equal to their four neighbours
    (all pixels where fewer than 100 are textured)."""
    core = y[..., 1:-1, 1:-1]
    eq = torch.ones_like(core, dtype=torch.bool)
    for other in (y[..., 1:-1, 2:], y[..., 1:-1, :-2], y[..., 2:, 1:-1], y[..., :-2, 1:-1]):
        eq = eq & ((core - other).abs() <= EQUAL)
    m = F.avg_pool2d(y, 15, stride=1, padding=7, count_include_pad=False)
    m2 = F.avg_pool2d(y * y, 15, stride=1, padding=7, count_include_pad=False)
    textured = ((m2 - m * m).clamp(min=0).sqrt() > TEXTURED)[..., 1:-1, 1:-1]
    eqf, tf = eq.to(y.dtype), textured.to(y.dtype)
    n_textured = tf.sum(dim=(1, 2, 3))
    share = (eqf * tf).sum(dim=(1, 2, 3)) / n_textured.clamp(min=1.0)
    return torch.where(n_textured >= 100, share, eqf.mean(dim=(1, 2, 3)))


def _text_edges(y: torch.Tensor) -> torch.Tensor:
    """``(B, 1, S, S)`` luma -> ``(B,)``: the share of pixels on strong edges, closed along rows or along columns
    (whichever joins more: a rotated view's lines of text run down its columns), the same for every flip and
    90-degree rotation of the view."""
    grad = F.max_pool2d(y, 3, 1, 1) + F.max_pool2d(-y, 3, 1, 1)  # max - min over 3 x 3
    edges = (grad > TEXT_EDGE).to(y.dtype)
    shares = []
    for k, r in (((1, TEXT_CLOSE), (0, TEXT_CLOSE // 2)), ((TEXT_CLOSE, 1), (TEXT_CLOSE // 2, 0))):
        closed = -F.max_pool2d(-F.max_pool2d(edges, k, 1, r), k, 1, r)
        shares.append(closed.mean(dim=(1, 2, 3)))
    return torch.maximum(*shares)


def _noise(y: torch.Tensor) -> torch.Tensor:
    """``(B, 1, S, S)`` luma -> ``(B,)`` noise sigma in grey levels (Immerkaer 1996)."""
    h, w = y.shape[-2] - 2, y.shape[-1] - 2
    r = sum(k * y[..., i : i + h, j : j + w] for i, row in enumerate(_LAPLACE) for j, k in enumerate(row) if k)
    return r.abs().mean(dim=(1, 2, 3)) * math.sqrt(math.pi / 2) / 6.0


def bar_share(x: torch.Tensor, tolerance: tuple[float, float] = FLAT) -> tuple[torch.Tensor, torch.Tensor]:
    """Float whole views ``(N, S, S, 3)`` -> (two-sided bar share, larger single bar), each the larger of the
    top/bottom and left/right readings, rows counted as uniform at ``tolerance`` (spread, distance to the corner)."""
    rows, cols = _bars(x, tolerance), _bars(x.transpose(1, 2), tolerance)
    return torch.maximum(rows[0], cols[0]), torch.maximum(rows[1], cols[1])


@torch.no_grad()
def measure(whole: torch.Tensor, crops: torch.Tensor | None) -> torch.Tensor:
    """uint8 whole view ``(N, S, S, 3)`` and detail crops ``(N, C, S, S, 3)`` (or None) -> ``(N, COUNT)``, raw."""
    x = whole.float()
    share, side = bar_share(x)
    strict = bar_share(x, STRICT_FLAT)[0]
    y = _luma(x)  # (N, S, S)
    luma_mean = y.mean(dim=(1, 2))
    clipped = (x.amin(-1) >= 250).to(x.dtype).mean(dim=(1, 2))
    spread = (y - luma_mean[:, None, None]).pow(2).mean(dim=(1, 2)).sqrt()
    if crops is not None and crops.shape[1]:
        n, c, s = crops.shape[0], crops.shape[1], crops.shape[2]
        yc = _luma(crops.float()).reshape(n * c, 1, s, s)
        mosaic = _mosaic(yc).reshape(n, c).mean(1)
        text = _text_edges(yc).reshape(n, c).mean(1)
        noise = _noise(yc).reshape(n, c).mean(1)
    else:
        mosaic, text, noise = _mosaic(y[:, None]), _text_edges(y[:, None]), _noise(y[:, None])
    return torch.stack([share, strict, side, mosaic, text, noise, luma_mean, clipped, spread], dim=1)


# (raw - centre) / scale: about unit range for each of NAMES
_CENTRE = (0.0, 0.0, 0.0, 0.25, 0.1, 1.0, 128.0, 0.0, 50.0)
_SCALE = (0.25, 0.25, 0.25, 0.25, 0.1, 1.0, 64.0, 0.25, 25.0)
_NOISE = NAMES.index("noise")


def scaled(raw: torch.Tensor) -> torch.Tensor:
    """``measure``'s ``(N, COUNT)`` -> the model's features: noise as log(1 + sigma), then centred and scaled."""
    raw = torch.cat([raw[:, :_NOISE], torch.log1p(raw[:, _NOISE : _NOISE + 1]), raw[:, _NOISE + 1 :]], dim=1)
    centre = torch.tensor(_CENTRE, dtype=raw.dtype, device=raw.device)
    scale = torch.tensor(_SCALE, dtype=raw.dtype, device=raw.device)
    return (raw - centre) / scale
