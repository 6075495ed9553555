"""Losses as plain functions. Every tag loss takes a mask: unknown labels contribute nothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def known_mask(targets: torch.Tensor) -> torch.Tensor:
    """1.0 where a label is known, 0.0 where it is blank (NaN)."""
    return (~torch.isnan(targets)).float()


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy averaged over known entries only; blank (NaN) targets are ignored.

    ``targets`` may be soft (in [0, 1]). With nothing known the loss is 0 (and still
    differentiable), so a batch of all-blank labels never produces NaN.
    """
    if mask is None:
        mask = known_mask(targets)
    t = torch.nan_to_num(targets, nan=0.0)
    per = F.binary_cross_entropy_with_logits(logits, t, reduction="none") * mask
    return per.sum() / mask.sum().clamp_min(1.0)


def quality_loss(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Quality regression as BCE against a soft target in [0, 1]; NaN targets are ignored."""
    return masked_bce(logit, target)
