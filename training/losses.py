"""Losses as plain functions. Every tag loss takes a mask: unknown labels contribute nothing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def known_mask(targets: torch.Tensor) -> torch.Tensor:
    """1.0 where a label is known, 0.0 where it is blank (NaN)."""
    return (~torch.isnan(targets)).float()


def _given(targets: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets with blanks as 0 (ignored by the mask) and the mask (known entries, unless given)."""
    return torch.nan_to_num(targets, nan=0.0), known_mask(targets) if mask is None else mask


def _mean_known(per: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of a per-entry loss over the mask: 0 (and differentiable) when nothing is known."""
    return (per * mask).sum() / mask.sum().clamp_min(1.0)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy averaged over known entries only; blank (NaN) targets are ignored.

    ``targets`` may be soft (in [0, 1]). With nothing known the loss is 0 (and still
    differentiable), so a batch of all-blank labels never produces NaN.
    """
    t, mask = _given(targets, mask)
    return _mean_known(F.binary_cross_entropy_with_logits(logits, t, reduction="none"), mask)


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
    t, mask = _given(targets, mask)
    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp(min=0) if clip > 0 else p  # shifted probability for negatives
    loss_pos = t * torch.log(p.clamp(min=1e-8)) * (1 - p) ** gamma_pos
    loss_neg = (1 - t) * torch.log((1 - p_neg).clamp(min=1e-8)) * p_neg**gamma_neg
    return _mean_known(-(loss_pos + loss_neg), mask)


def gce_loss(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None, q: float = 0.7
) -> torch.Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu 2018) per binary tag: ``(1 - p_y ** q) / q``.

    Bounded, so a wrong label cannot dominate the gradient; q -> 0 recovers BCE, q = 1 is MAE.
    Soft targets mix the two outcomes.
    """
    t, mask = _given(targets, mask)
    p = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
    return _mean_known((t * (1 - p**q) + (1 - t) * (1 - (1 - p) ** q)) / q, mask)


def hill_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    lam: float = 1.5,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Hill loss (Zhang et al. 2021) for missed positives: focal loss on 1s, ``-(lam - p) p^2`` on 0s.

    The negative term's gradient is hill-shaped: largest for unsure predictions, vanishing as ``p``
    nears 1, so a confident prediction against a given 0 — most often a missed positive — is barely
    pushed down (BCE pushes it hardest).
    """
    t, mask = _given(targets, mask)
    p = torch.sigmoid(logits)
    pos = -((1 - p) ** gamma) * F.logsigmoid(logits)
    neg = (lam - p) * p**2
    return _mean_known(t * pos + (1 - t) * neg, mask)


def forward_bce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    miss_rate: float = 0.0,
    fp_rate: float = 0.0,
) -> torch.Tensor:
    """BCE with forward noise correction (Natarajan et al. 2013; Patrini et al. 2017) for known rates.

    Annotators miss ``miss_rate`` of positives and mark ``fp_rate`` of negatives, so a given label is
    1 with probability ``q = fp + (1 - miss - fp) p`` where ``p`` is the model's (clean) probability.
    The loss is BCE of the given labels against ``q``: its minimiser is the clean ``p``, and a label
    the model confidently contradicts costs at most ``-log(fp)`` or ``-log(miss)`` (BCE: unbounded).
    Zero rates are plain BCE.
    """
    keep = 1.0 - miss_rate - fp_rate
    if not (0.0 <= miss_rate < 1.0 and 0.0 <= fp_rate < 1.0 and keep > 0.0):
        raise ValueError(f"need 0 <= miss_rate, fp_rate and miss_rate + fp_rate < 1, got {miss_rate}, {fp_rate}")
    t, mask = _given(targets, mask)
    # log q and log(1 - q) from log-sigmoids, exact at zero rates and finite for any logit
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    log_q = torch.logaddexp(log_p + math.log(keep), torch.full_like(log_p, _log_or_neg_inf(fp_rate)))
    log_not_q = torch.logaddexp(log_not_p + math.log(keep), torch.full_like(log_p, _log_or_neg_inf(miss_rate)))
    return _mean_known(-(t * log_q + (1 - t) * log_not_q), mask)


def _log_or_neg_inf(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def tag_loss(
    name: str, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None, **kwargs: float
) -> torch.Tensor:
    """The tag loss a recipe names (``bce``, ``asl``, ``gce``, ``hill``, ``forward``); ``kwargs``: its parameters."""
    if name == "bce":
        return masked_bce(logits, targets, mask)
    if name == "asl":
        return asymmetric_loss(logits, targets, mask, **kwargs)
    if name == "gce":
        return gce_loss(logits, targets, mask, **kwargs)
    if name == "hill":
        return hill_loss(logits, targets, mask, **kwargs)
    if name == "forward":
        return forward_bce(logits, targets, mask, **kwargs)
    raise ValueError(f"unknown tag loss {name!r} (bce, asl, gce, hill, forward)")


@torch.no_grad()
def large_loss_targets(logits: torch.Tensor, targets: torch.Tensor, rate: float, correct: bool = False) -> torch.Tensor:
    """Large-loss rejection / correction (LL-R / LL-Ct, Kim et al. CVPR 2022) on the given 0s of a batch.

    The ``rate`` share of given 0s with the largest BCE (the model most sure they are 1: likely
    missed positives) are rejected — made blank — or, with ``correct``, flipped to 1. Given 1s and
    blanks are untouched. Returns the new targets.
    """
    out = targets.clone()
    zeros = targets == 0
    k = int(rate * int(zeros.sum()))
    if k <= 0:
        return out
    loss = F.softplus(logits).masked_fill(~zeros, float("-inf"))  # BCE of a 0 target = softplus(logit)
    idx = torch.topk(loss.flatten(), k).indices
    out.view(-1)[idx] = 1.0 if correct else float("nan")
    return out


@torch.no_grad()
def splc_targets(logits: torch.Tensor, targets: torch.Tensor, tau: float = 0.6) -> torch.Tensor:
    """Self-paced label correction (SPLC, Zhang et al. 2021): a given 0 the model puts above ``tau`` becomes a 1."""
    out = targets.clone()
    out[(targets == 0) & (torch.sigmoid(logits) > tau)] = 1.0
    return out


def consistency_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor | None = None, kind: str = "mse"
) -> torch.Tensor:
    """Student vs (detached) teacher probabilities per tag, masked: ``mse`` or Bernoulli ``kl``.

    MSE on probabilities pushes with ``2 (p_s - p_t) p_s (1 - p_s)`` on the logit: it fades out where
    the student is confident, so a confident wrong negative is barely corrected. The KL pushes with
    ``p_s - p_t`` everywhere (zero when they agree).
    """
    if mask is None:
        mask = torch.ones_like(teacher_probs)
    t = teacher_probs.detach()
    if kind == "mse":
        per = (torch.sigmoid(student_logits) - t) ** 2
    elif kind == "kl":
        tc = t.clamp(1e-6, 1 - 1e-6)
        entropy = -(tc * tc.log() + (1 - tc) * (1 - tc).log())
        per = F.binary_cross_entropy_with_logits(student_logits, t, reduction="none") - entropy
    else:
        raise ValueError(f"unknown consistency {kind!r} (mse, kl)")
    return _mean_known(per, mask)


def per_sample_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Unreduced BCE ``(N, T)``; NaN where the label is unknown (for loss modelling)."""
    t = torch.nan_to_num(targets, nan=0.0)
    per = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    return per.masked_fill(torch.isnan(targets), float("nan"))


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sharpen Bernoulli probabilities per tag: ``p^(1/T) / (p^(1/T) + (1 - p)^(1/T))`` (T < 1 sharpens)."""
    a = probs.clamp(1e-6, 1 - 1e-6) ** (1.0 / temperature)
    b = (1 - probs.clamp(1e-6, 1 - 1e-6)) ** (1.0 / temperature)
    return a / (a + b)


def bernoulli_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(Ber(sigmoid p) || Ber(sigmoid q)) summed over tags, averaged over the batch."""
    p = torch.sigmoid(p_logits)
    kl = p * (F.logsigmoid(p_logits) - F.logsigmoid(q_logits)) + (1 - p) * (
        F.logsigmoid(-p_logits) - F.logsigmoid(-q_logits)
    )
    return kl.sum(-1).mean()
