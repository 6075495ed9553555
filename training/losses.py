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


def asymmetric_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.05,
) -> torch.Tensor:
    """Asymmetric loss (ASL, Ridnik et al. 2021), masked like ``masked_bce``.

    Negatives are down-weighted by ``p ** gamma_neg`` and easy ones (p < clip) are
    ignored entirely, which both fights the positive/negative imbalance of
    multi-label tags and softens the penalty on *missed positives* (a creative
    labelled 0 that the model, rightly, finds positive).
    """
    if mask is None:
        mask = known_mask(targets)
    t = torch.nan_to_num(targets, nan=0.0)
    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp(min=0) if clip > 0 else p  # shifted probability for negatives
    loss_pos = t * torch.log(p.clamp(min=1e-8)) * (1 - p) ** gamma_pos
    loss_neg = (1 - t) * torch.log((1 - p_neg).clamp(min=1e-8)) * p_neg**gamma_neg
    per = -(loss_pos + loss_neg) * mask
    return per.sum() / mask.sum().clamp_min(1.0)


def gce_loss(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None, q: float = 0.7
) -> torch.Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu 2018) per binary tag: ``(1 - p_y ** q) / q``.

    Bounded, so a wrong label cannot dominate the gradient; q -> 0 recovers BCE, q = 1 is MAE.
    Soft targets mix the two outcomes.
    """
    if mask is None:
        mask = known_mask(targets)
    t = torch.nan_to_num(targets, nan=0.0)
    p = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
    per = (t * (1 - p**q) + (1 - t) * (1 - (1 - p) ** q)) / q * mask
    return per.sum() / mask.sum().clamp_min(1.0)


def tag_loss(
    name: str, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None, **kwargs: float
) -> torch.Tensor:
    """The tag loss a recipe names: ``bce``, ``asl`` or ``gce``."""
    if name == "bce":
        return masked_bce(logits, targets, mask)
    if name == "asl":
        return asymmetric_loss(logits, targets, mask, **kwargs)
    if name == "gce":
        return gce_loss(logits, targets, mask, **kwargs)
    raise ValueError(f"unknown tag loss {name!r} (bce, asl, gce)")


def consistency_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error between student probabilities and (detached) teacher probabilities, masked."""
    if mask is None:
        mask = torch.ones_like(teacher_probs)
    per = (torch.sigmoid(student_logits) - teacher_probs.detach()) ** 2 * mask
    return per.sum() / mask.sum().clamp_min(1.0)


def per_sample_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Unreduced BCE ``(N, T)``; NaN where the label is unknown (for loss modelling)."""
    t = torch.nan_to_num(targets, nan=0.0)
    per = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    return per.masked_fill(torch.isnan(targets), float("nan"))
