"""Augmentations that preserve every tag of the taxonomy.

Only operations that leave each DESIGN.md label true are allowed. A horizontal
flip changes none of them: blur, noise, JPEG blocks, exposure, contrast, bars on
opposite sides, a watermark, text coverage and mosaic size are all mirror-symmetric
properties (mirrored text is still text). Operations that would change a label are
left out on purpose:

* blur, sharpness, JPEG, noise, posterize: they *are* defects (or remove them);
* brightness, contrast, solarize, equalize: move exposure and contrast across thresholds;
* rescaling or heavy crops: change blur sigma, mosaic block and upscale factors relative
  to the creative, and can cut away letterbox bars or text.
"""

from __future__ import annotations

import torch


def hflip(images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each creative (all its views together) left-right with probability ``p``.

    ``images``: ``(N, V, S, S, 3)``.
    """
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    if not flip.any():
        return images
    out = images.clone()
    out[flip] = images[flip].flip(3)  # width axis of (N, V, H, W, C)
    return out


def view_shuffle_crops(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Swap the order of the detail crops (views 1..V-1); the whole view stays first."""
    v = images.shape[1]
    if v <= 2:
        return images
    perm = torch.randperm(v - 1, generator=generator) + 1
    return torch.cat([images[:, :1], images[:, perm]], dim=1)


def weak(images: torch.Tensor) -> torch.Tensor:
    """The label-preserving augmentation used for supervised batches."""
    return view_shuffle_crops(hflip(images))
