"""Supervised training on the labeled set: masked BCE on known tags plus the quality loss."""

from __future__ import annotations

from training.augment import weak
from training.losses import masked_bce, quality_loss
from training.methods.base import Method, register


@register("supervised")
class Supervised(Method):
    def train_step(self, batch, unlabeled, step):
        tag_logits, q_logit = self.model(weak(batch["images"]))
        tag = masked_bce(tag_logits, batch["labels"])
        qual = quality_loss(q_logit, batch["quality"])
        loss = tag + self.quality_weight * qual
        return loss, {"loss_tags": float(tag.detach()), "loss_quality": float(qual.detach())}


__all__ = ["Supervised"]
