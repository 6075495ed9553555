"""Defect synthesis on the model's views: make a defect happen, and know its label.

The platform knows what each defect tag means (DESIGN.md), so it can take an
unlabeled creative, apply one defect clearly over its threshold, and know that this
tag is 1 (its other tags stay unknown) and that the copy's quality must rank below its
source's. This module does it on the cached uint8 views ``(N, V, S, S, 3)`` of
``creative_qa.preprocess`` — the whole creative stretched to ``S`` and detail crops
cut at ``detail_side`` pixels on the short side — in torch, on the batch's device, so
every step draws new copies.

It is written independently of ``creative_qa/synth`` (other kernels, other code):
separable Gaussian convolution in torch rather than PIL's blur, torchvision's JPEG
codec rather than PIL's, area-pooled mosaics and bicubic upscaling, photometric
curves fitted on the whole view. A model that only learned the generator's
fingerprints gains nothing from it; the foreign held-out split
(``benchmarks/foreign.py``, a third implementation) is where that shows.

Scale: relative defects (blur sigma, mosaic block) are defined on the creative's short
side, so each view gets them at its own scale (``detail_side`` pixels for a crop, ``S``
for the whole view). Pixel-level ones (noise, an upscale by a factor; JPEG) happen at the
creative's own pixels, so a view shows them as its downscale from the creative's size
leaves them: noise attenuated, an upscale's factor shrunk (none on the crops of a large
creative). The size comes from the grid view where it carries one (``grid_profile``);
without it every creative is taken to be ``detail_side`` px, its crops native. Layout and
content tags (letterbox, watermark, text) are not synthesised: they would need the whole
creative, not its views.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from creative_qa.preprocess import short_side_of

W_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Op:
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    low: float  # parameter range, all clearly over the tag's threshold (creative_qa.synth.defects.DEFECTS)
    high: float
    block_grid: bool = False  # its evidence is the whole creative's JPEG block grid: not made with the grid view


def _luma(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(W_LUMA, dtype=x.dtype, device=x.device)
    return x @ w  # (..., 3) -> (...)


def _nchw(views: torch.Tensor) -> torch.Tensor:
    return views.permute(0, 3, 1, 2)  # (V, S, S, 3) -> (V, 3, S, S)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def _native(scales: torch.Tensor, native: float | None) -> float:
    """The creative's short side in px: given, or the crops' (``view_scales``), their pixels then its own."""
    if native:
        return float(native)
    return float(scales[1:].max()) if len(scales) > 1 else float(scales[0])


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with reflect padding."""
    if sigma < 0.3:
        return x
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    pad = min(r, x.shape[-1] - 1)
    k = k[r - pad : r + pad + 1]
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def blurry(
    views: torch.Tensor, k: float, scales: torch.Tensor, g: torch.Generator, native: float | None = None
) -> torch.Tensor:
    """Gaussian blur with sigma = ``k`` x the short side, at each view's scale (``scales``: short side in px)."""
    out = [gaussian_blur(_nchw(v[None]), float(k * s)) for v, s in zip(views, scales, strict=True)]
    return _nhwc(torch.cat(out))


def noisy(
    views: torch.Tensor, std: float, scales: torch.Tensor, g: torch.Generator, native: float | None = None
) -> torch.Tensor:
    """Gaussian noise of ``std`` at the creative's own pixels: on each view as much as its downscale leaves."""
    atten = (scales / _native(scales, native)).clamp(max=1.0)
    n = torch.randn(views.shape, generator=g, device="cpu").to(views) * std
    return (views + n * atten.view(-1, 1, 1, 1).to(views)).clamp(0, 1)


def jpeg_artifacts(
    views: torch.Tensor, q: float, scales: torch.Tensor, g: torch.Generator, native: float | None = None
) -> torch.Tensor:
    """torchvision's JPEG codec at quality ``q`` on the crops (the whole view is too small to show blocks)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    out = views.clone()
    for i in range(1, len(views)):
        u8 = (views[i] * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(2, 0, 1).cpu().contiguous()
        out[i] = decode_jpeg(encode_jpeg(u8, quality=int(round(q)))).permute(1, 2, 0).to(views) / 255.0
    return out


def pixelated(
    views: torch.Tensor, b: float, scales: torch.Tensor, g: torch.Generator, native: float | None = None
) -> torch.Tensor:
    """Mosaic of blocks ``b`` x the short side: area pooling, then nearest upscaling."""
    out = []
    for v, s in zip(views, scales, strict=True):
        px = max(1, int(round(b * float(s))))
        x = _nchw(v[None])
        if px > 1:
            size = x.shape[-1]
            x = F.interpolate(F.adaptive_avg_pool2d(x, max(1, size // px)), size=size, mode="nearest")
        out.append(x)
    return _nhwc(torch.cat(out))


def low_resolution(
    views: torch.Tensor, f: float, scales: torch.Tensor, g: torch.Generator, native: float | None = None
) -> torch.Tensor:
    """Content upscaled ``f`` times from a smaller source: area downscale, bicubic upscale (crops).

    ``f`` is at the creative's own pixels: a crop cut at ``scales[1]`` px of a creative ``native`` px on
    its short side shows an upscale by ``f x scales[1] / native`` (none, where that is not over 1: the
    crops of a large creative are a downscale of its source).
    """
    out = views.clone()
    size = views.shape[1]
    fv = f * float(scales[1]) / _native(scales, native) if len(scales) > 1 else f
    small = max(2, int(round(size / fv)))
    x = _nchw(views[1:])
    if len(x) and small < size:
        x = F.interpolate(F.interpolate(x, size=small, mode="area"), size=size, mode="bicubic", align_corners=False)
        out[1:] = _nhwc(x).clamp(0, 1)
    return out


def overexposed(
    views: torch.Tensor, share: float, scales: torch.Tensor, g: torch.Generator, native: float | None = None
) -> torch.Tensor:
    """A gain (after a brightening curve) that clips ``share`` of the whole view's pixels to white."""
    y = 1 - (1 - views) ** 1.3
    lum0, lum = _luma(views[0]).flatten(), _luma(y[0]).flatten()
    free = lum[lum0 < 0.98]  # the definition counts pixels the defect clipped, not those white already
    if free.numel() == 0:
        return y
    need = min(0.99, share * lum.numel() / free.numel())
    q = torch.quantile(free, 1 - need).clamp_min(1e-3)
    # Highlights blow out to white: a gain, and pixels above the quantile washed to white (a saturated
    # colour never reaches white by gain alone, its other channels stay low).
    out = (y * (0.985 / q)).clamp(0, 1)
    wash = ((_luma(y) - q) / (0.05 * q) + 1).clamp(0, 1)[..., None]
    return out * (1 - wash) + wash


def underexposed(
    views: torch.Tensor, target: float, scales: torch.Tensor, g: torch.Generator, native: float | None = None
) -> torch.Tensor:
    """A darkening curve, then the gain that brings the whole view's mean luma to ``target`` (0-255)."""
    y = views**1.4
    gain = (target / 255.0) / _luma(y[0]).mean().clamp_min(1e-3)
    return (y * gain.clamp(max=1.0)).clamp(0, 1)


def low_contrast(
    views: torch.Tensor, a: float, scales: torch.Tensor, g: torch.Generator, native: float | None = None
) -> torch.Tensor:
    """Luma spread scaled by ``a`` around the whole view's mean luma."""
    m = _luma(views[0]).mean()
    return (m + a * (views - m)).clamp(0, 1)


# name -> operation and its parameter range, in the units of the tag's DESIGN.md rule (the thresholds live in
# creative_qa.synth.defects.DEFECTS; tests/training/test_degrade.py measures every output against them):
OPS: dict[str, Op] = {
    "blurry": Op(blurry, 0.009, 0.02),  # blur sigma / short side
    "noisy": Op(noisy, 16 / 255, 40 / 255),  # noise std
    "jpeg_artifacts": Op(jpeg_artifacts, 5, 16, block_grid=True),  # JPEG quality
    "pixelated": Op(pixelated, 0.03, 0.06),  # mosaic block / short side
    "low_resolution": Op(low_resolution, 3.5, 6.0),  # upscale factor
    "overexposed": Op(overexposed, 0.32, 0.6),  # share of pixels clipped near white
    "underexposed": Op(underexposed, 20.0, 50.0),  # mean luma x 255
    "low_contrast": Op(low_contrast, 0.12, 0.28),  # luma std / the original's
}


def view_scales(views: int, input_size: int, detail_side: int) -> torch.Tensor:
    """The creative's short side in pixels as each view shows it: ``S`` (whole view), ``detail_side`` (crops).

    NOTE: native-pixel crops (``native_crops``) get ``detail_side`` too, as if the creative were that
    size. Blur and pixelation are then too weak on a large creative's native crops, and noise and
    an upscale as strong on its crops as at its own pixels.
    """
    return torch.tensor([float(input_size)] + [float(detail_side or input_size)] * (views - 1))


def step_profile(views: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``log2(E_2n / E_n)`` for n = 1, 2, 4 of uint8 picture views ``(N, V, S, S, 3)``: ``(N, 3)``.

    ``E_n`` is the mean squared luma difference between pixels ``n`` apart, across rows and columns,
    pooled over the views: ``creative_qa.preprocess.scale_profile``'s measure, on views in torch.
    """
    y = _luma(views.float())  # (N, V, S, S), 0-255
    energy = []
    for n in (1, 2, 4, 8):
        rows = (y[..., :, n:] - y[..., :, :-n]).square().mean(dim=(1, 2, 3))
        cols = (y[..., n:, :] - y[..., :-n, :]).square().mean(dim=(1, 2, 3))
        energy.append((rows + cols) / 2 + eps)
    e = torch.stack(energy, dim=1)
    return torch.log2(e[:, 1:] / e[:, :-1])


def synthesised_tags(tags: list[str], grid_view: bool = False, ops: tuple[str, ...] | None = None) -> list[str]:
    """The tags of ``tags`` that ``synthesize`` makes copies of (``ops``: at most these): every tag with an
    operation, but JPEG with the grid view (a copy's JPEG evidence cannot be made from its crops)."""
    return [t for t in (ops or tuple(OPS)) if t in OPS and t in tags and not (grid_view and OPS[t].block_grid)]


def synthesize(
    images: torch.Tensor,
    tags: list[str],
    detail_side: int,
    generator: torch.Generator | None = None,
    ops: tuple[str, ...] | None = None,
    grid_view: bool = False,
    grid_profile: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One degraded copy of every creative: uint8 views ``(N, V, S, S, 3)`` in, the copies and their labels out.

    Each copy gets one defect drawn from ``ops`` (default: every synthesisable tag in ``tags``); its label
    row is 1 for that tag and NaN (unknown) everywhere else.

    With ``grid_view`` the last view is the creative's JPEG evidence read over its own pixels
    (``creative_qa.preprocess.grid_view``), not a picture; the whole creative is not here to read it
    again, so every copy keeps its source's. That is right for a source without a JPEG (noise, blur
    or exposure leave its numbers near neutral); a copy of a coarse JPEG keeps a JPEG's numbers that
    the noise or blur would in truth have weakened. Only the synthesised tag is labeled, so this
    teaches nothing false about ``jpeg_artifacts``. JPEG itself is not synthesised then: a copy's
    numbers would have to come from its crops alone, where edges drown the blocks (measured: a lift
    of 1.1-1.2 at the block edges against 1.3-3.3 for the same codec on the whole creative).

    With ``grid_profile`` the view also carries the creative's size, and each copy's crops are made as
    a creative of that size shows them (an upscale by 4 at 1,080 px leaves a 256 px crop sharp). The
    profile (the inner square) is the one number set a copy must not keep: an upscale, noise or blur
    change it, and a copy labeled ``low_resolution`` with its sharp source's profile would teach the
    model to ignore it. It is its source's moved by the change the defect makes to the crops' profile
    (``step_profile``) when they are taken for the creative's own pixels: the defect at its native
    strength.
    """
    g = generator or torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
    names = synthesised_tags(tags, grid_view, ops)
    if not names:
        raise ValueError(f"no synthesisable defect among the tags {tags}")
    n, v, s = images.shape[:3]
    scales = view_scales(v, s, detail_side)
    profile = grid_view and grid_profile
    # the creative's size, from the grid view's size ring (none without a profile: crops taken as native)
    natives = [short_side_of(float(b)) for b in images[:, -1, s // 8, s // 8, 0]] if profile else [None] * n
    x = images.float() / 255.0
    labels = torch.full((n, len(tags)), float("nan"), device=images.device)
    out = torch.empty_like(x)
    at_native = torch.empty_like(x) if profile else None
    picks = torch.randint(0, len(names), (n,), generator=g)
    params = torch.rand(n, generator=g)
    for i in range(n):
        name = names[int(picks[i])]
        op = OPS[name]
        value = op.low + float(params[i]) * (op.high - op.low)
        out[i] = op.fn(x[i], value, scales, g, natives[i])
        if at_native is not None:  # the crops taken for the creative's own pixels: the defect at full strength
            own = scales.clone()
            own[1:] = _native(scales, natives[i])
            at_native[i] = op.fn(x[i], value, own, g, natives[i])
        labels[i, tags.index(name)] = 1.0
    copies = _uint8(out)
    if grid_view:
        copies[:, -1] = images[:, -1]
        if at_native is not None:
            pictures = slice(1, v - 1) if v > 2 else slice(0, 1)  # the crops; the whole view if there are none
            shift = step_profile(_uint8(at_native[:, pictures])) - step_profile(images[:, pictures])  # (N, 3)
            q = s // 4
            inner = copies[:, -1, q : s - q, q : s - q].float() + 64.0 * shift[:, None, None, :]
            copies[:, -1, q : s - q, q : s - q] = _uint8(inner / 255.0)
    return copies, labels


def _uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255 + 0.5).clamp(0, 255).to(torch.uint8)


def ranking_loss(q_source: torch.Tensor, q_degraded: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """RankNet-style: the source's quality logit should exceed its degraded copy's by ``margin``."""
    return F.softplus(margin - (q_source - q_degraded)).mean()
