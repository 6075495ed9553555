"""UDA (Xie et al. 2020), multi-label: sharpened, confidence-masked consistency and training-signal annealing.

Unlabeled creatives: the network's probabilities on the weak view (no gradient) are
sharpened per tag, ``p^(1/T) / (p^(1/T) + (1 - p)^(1/T))``, and kept only where the
network is confident on that tag (``max(p, 1 - p) >= confidence``); the strong view is
trained towards them. Labeled creatives: training-signal annealing per tag — a known
label the network already predicts correctly with probability above ``eta_t`` is left
out of the loss, ``eta_t`` rising from 1/2 (two outcomes per tag) to 1 over
``tsa_steps`` on a linear, log or exp schedule, so the few labels are not memorised
early.
"""

from __future__ import annotations

import math

import torch

from training.losses import known_mask, masked_bce, quality_loss, sharpen, tag_loss
from training.methods.base import register
from training.methods.ema import TeacherMethod


def tsa_threshold(step: int, total: int, schedule: str = "linear", outcomes: int = 2) -> float:
    """``eta_t = alpha_t (1 - 1/K) + 1/K`` with ``alpha_t`` linear, log or exp in ``t / total``."""
    t = min(1.0, step / max(1, total))
    if schedule == "linear":
        a = t
    elif schedule == "log":
        a = 1 - math.exp(-t * 5)
    elif schedule == "exp":
        a = math.exp((t - 1) * 5)
    else:
        raise ValueError(f"unknown TSA schedule {schedule!r} (linear, log, exp)")
    return a * (1 - 1 / outcomes) + 1 / outcomes


def tsa_mask(logits: torch.Tensor, labels: torch.Tensor, eta: float) -> torch.Tensor:
    """1 where a known label still counts: the probability of its given value is at most ``eta``."""
    p = torch.sigmoid(logits.detach())
    p_given = torch.where(labels == 1, p, 1 - p)
    return known_mask(labels) * (p_given <= eta).float()


@register("uda")
class UDA(TeacherMethod):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        temperature: float = 0.4,
        confidence: float = 0.8,
        tsa: str | None = "linear",
        tsa_steps: int = 500,
        unlabeled_weight: float = 1.0,
        loss: str = "bce",
        ema_decay: float = 0.99,
        unlabeled_ratio: int = 1,
    ):
        super().__init__(model, quality_weight, ema_decay)
        self.temperature, self.confidence, self.tsa, self.tsa_steps = temperature, confidence, tsa, tsa_steps
        self.unlabeled_weight, self.loss, self.unlabeled_ratio = unlabeled_weight, loss, unlabeled_ratio

    def targets(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sharpened weak-view probabilities and the per-tag confidence mask."""
        with torch.no_grad():
            p = torch.sigmoid(self.model(self.weak(images))[0])
        return sharpen(p, self.temperature), (torch.maximum(p, 1 - p) >= self.confidence).float()

    def train_step(self, batch, unlabeled, step):
        x, y = batch["images"], batch["labels"]
        tags, q = self.model(self.strong(x, batch.get("crop_pool")))
        eta = tsa_threshold(step, self.tsa_steps, self.tsa) if self.tsa else 1.0
        mask = tsa_mask(tags, y, eta)
        sup = tag_loss(self.loss, tags, y, mask) + self.quality_weight * quality_loss(q, batch["quality"])
        target, conf = self.targets(x)
        unsup = masked_bce(tags, target, conf * (1 - known_mask(y)))  # blank tags of labeled creatives
        if unlabeled is not None:
            u_target, u_conf = self.targets(unlabeled["images"])
            u_tags, _ = self.model(self.strong(unlabeled["images"], unlabeled.get("crop_pool")))
            unsup = unsup + masked_bce(u_tags, u_target, u_conf)
        return sup + self.unlabeled_weight * unsup, {
            "loss_sup": float(sup.detach()),
            "loss_unsup": float(unsup.detach()),
            "tsa_eta": eta,
            "tsa_kept": float(mask.sum() / known_mask(y).sum().clamp_min(1)),
        }
