"""PI model (Laine & Aila 2017), multi-label: two noised passes of the same creative must agree.

Each creative goes through the network twice, with independent strong views and dropout;
the second pass's probabilities (detached) are the target of the first, per tag, with
the ramped weight ``w(t) = consistency * exp(-5 (1 - t)^2)``. On unlabeled creatives
every tag counts; on labeled ones only the blank tags (known ones have their label).
"""

from __future__ import annotations

import torch

from training.losses import consistency_loss, known_mask, quality_loss, tag_loss
from training.methods.base import register
from training.methods.ema import TeacherMethod, sigmoid_rampup


@register("pi_model")
class PiModel(TeacherMethod):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        consistency: float = 10.0,
        rampup_steps: int = 200,
        loss: str = "bce",
        ema_decay: float = 0.99,
        unlabeled_ratio: int = 1,
    ):
        super().__init__(model, quality_weight, ema_decay)  # the EMA is only evaluated, as for every arm
        self.consistency, self.rampup_steps, self.loss, self.unlabeled_ratio = (
            consistency,
            rampup_steps,
            loss,
            unlabeled_ratio,
        )

    def two_passes(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of two noised passes (the second detached, as probabilities) and the first pass's quality."""
        tags1, q = self.model(self.strong(b["images"], b.get("crop_pool")))
        with torch.no_grad():
            tags2, _ = self.model(self.strong(b["images"], b.get("crop_pool")))
        return tags1, torch.sigmoid(tags2), q

    def train_step(self, batch, unlabeled, step):
        tags, target, q = self.two_passes(batch)
        sup = tag_loss(self.loss, tags, batch["labels"]) + self.quality_weight * quality_loss(q, batch["quality"])
        cons = consistency_loss(tags, target, 1 - known_mask(batch["labels"]))
        if unlabeled is not None:
            u_tags, u_target, _ = self.two_passes(unlabeled)
            cons = cons + consistency_loss(u_tags, u_target)
        w = self.consistency * sigmoid_rampup(step, self.rampup_steps)
        return sup + w * cons, {"loss_sup": float(sup.detach()), "loss_cons": float(cons.detach()), "cons_weight": w}
