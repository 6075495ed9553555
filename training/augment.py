"""Augmentations that preserve every tag of the taxonomy.

Only operations that leave each DESIGN.md label true are allowed. A horizontal
flip changes none of them: blur, noise, JPEG blocks, exposure, contrast, bars on
opposite sides, a watermark, text coverage and mosaic size are all mirror-symmetric
properties (mirrored text is still text). Operations that would change a label are
left out on purpose:

* blur, sharpness, JPEG, noise, posterize: they *are* defects (or remove them);
* brightness, contrast, solarize, equalize: move exposure and contrast across thresholds;
* rescaling or heavy crops: change blur sigma, mosaic block and upscale factors relative
  to the creative, and can cut away letterbox bars or text;
* hue/saturation jitter and channel shuffles: they move luma, which decides exposure and
  contrast. Even a channel permutation that adds the luma difference back fails: where a
  channel is clipped at 255 the luma cannot be restored, and the share of near-white
  pixels (``overexposed``) drops (tests/training/test_augment.py caught this).

* luma-preserving chroma rotations: exact in real numbers, but wherever a channel
  clips at 0 or 255 the rotated pixel's luma moves, so near-white shares
  (``overexposed``) and dark means drift across their thresholds.

The strong view (for SSL) changes *which* evidence the model sees and *how it is laid
out*, never what it says: the whole view stays, each detail crop is drawn at random
from the creative's served crops plus its ``crop_pool`` of further high-edge-energy
windows (another crop of the same creative, at the same scale, carries the same
defects: they are defined over the whole creative), the crops come in random order,
and every view is flipped and rotated by 90 degrees independently. Those are pixel
permutations of windows of the same creative: bars stay on opposite sides, text stays
text, every pixel statistic of a window is unchanged. The rest of the "strong" noise
comes from the model (dropout, stochastic depth). ``tests/training/test_augment.py``
checks each operation on generated creatives near every threshold.
"""

from __future__ import annotations

import torch

# NOTE: views have roles (creative_qa.preprocess): the whole view, the detail crops, then the
# native-pixel crops, which alternate between edge and smooth windows and so keep their places,
# and the grid view (a block-grid signature, not a window). Only detail crops are shuffled and
# re-drawn. ``native`` is how many views at the end of a batch keep their place; the caller knows
# it from its views' spec (``training.methods.base.Method.native_views``), 0 when there are none.


def _roles(images: torch.Tensor, native: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``images`` split into its whole view, detail crops and ``native`` kept views (views on the same tensor)."""
    v = images.shape[1]
    k = min(native, max(0, v - 1))
    return images[:, :1], images[:, 1 : v - k], images[:, v - k :]


def _shuffle(views: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if views.shape[1] < 2:
        return views
    return views[:, torch.randperm(views.shape[1], generator=generator)]


def _flip(images: torch.Tensor, axis: int, p: float, generator: torch.Generator | None) -> torch.Tensor:
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    if not flip.any():
        return images
    out = images.clone()
    out[flip] = images[flip].flip(axis)
    return out


def hflip(images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each creative (all its views together) left-right with probability ``p``.

    ``images``: ``(N, V, S, S, 3)``.
    """
    return _flip(images, 3, p, generator)  # width axis of (N, V, H, W, C)


def view_shuffle_crops(images: torch.Tensor, generator: torch.Generator | None = None, native: int = 0) -> torch.Tensor:
    """Swap the order of the detail crops; the whole view stays first, the ``native`` last views in place."""
    if images.shape[1] <= 2:
        return images
    whole, detail, kept = _roles(images, native)
    return torch.cat([whole, _shuffle(detail, generator), kept], dim=1)


def vflip(images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each creative (all views together) upside down with probability ``p``."""
    return _flip(images, 2, p, generator)  # height axis of (N, V, H, W, C)


def rot90(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each creative's square views by a random multiple of 90 degrees (a pixel permutation)."""
    k = torch.randint(0, 4, (images.shape[0],), generator=generator)
    out = images.clone()
    for r in (1, 2, 3):
        pick = (k == r).to(images.device)
        if pick.any():
            out[pick] = images[pick].rot90(r, dims=(2, 3))
    return out


def per_view(fn, images: torch.Tensor) -> torch.Tensor:
    """Apply a per-creative augmentation to every view independently: ``(N, V, ...)`` as ``N*V`` creatives."""
    n, v = images.shape[:2]
    return fn(images.reshape(n * v, 1, *images.shape[2:])).reshape(images.shape)


def detail_windows(images: torch.Tensor, pool: torch.Tensor | None, native: int = 0) -> torch.Tensor:
    """A creative's detail windows: its served detail crops then its ``pool``, ``(N, C + P, S, S, 3)``."""
    detail = _roles(images, native)[1]
    return detail if pool is None or pool.shape[1] == 0 else torch.cat([detail, pool], dim=1)


def flip_rotate(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Every view flipped (both axes) and rotated by 90 degrees at random, each on its own."""
    return per_view(lambda v: rot90(vflip(hflip(v, generator=generator), generator=generator), generator), images)


def resample_crops(
    images: torch.Tensor, pool: torch.Tensor | None, generator: torch.Generator | None = None, native: int = 0
):
    """Draw each creative's detail crops at random from its served crops plus its ``pool`` of other windows.

    ``images`` ``(N, V, S, S, 3)``, ``pool`` ``(N, P, S, S, 3)``; the whole view (view 0) stays first and
    native crops and the grid view (if any) stay last, in place.
    """
    whole, detail, kept = _roles(images, native)
    crops = detail.shape[1]
    if crops <= 0:
        return images
    cands = detail_windows(images, pool, native)
    order = torch.rand(cands.shape[:2], generator=generator).argsort(dim=1)[:, :crops].to(images.device)
    picked = torch.gather(cands, 1, order.view(*order.shape, 1, 1, 1).expand(-1, -1, *cands.shape[2:]))
    return torch.cat([whole, picked, kept], dim=1)


def strong(images: torch.Tensor, pool: torch.Tensor | None = None, native: int = 0) -> torch.Tensor:
    """The strong, still label-preserving view used by the semi-supervised methods.

    Crops re-drawn from the creative's windows (``pool``), then every view flipped and
    rotated independently.
    """
    return flip_rotate(resample_crops(images, pool, native=native))


def weak(images: torch.Tensor, native: int = 0) -> torch.Tensor:
    """The label-preserving augmentation used for supervised batches."""
    return view_shuffle_crops(hflip(images), native=native)
