"""Supervised training on the labeled set: a masked tag loss on known tags plus the quality loss.

``loss`` picks the tag loss: ``bce``, or a robust one for noisy labels, ``asl``
(asymmetric loss) or ``gce`` (generalized cross-entropy).
"""

from __future__ import annotations

from training.augment import weak
from training.losses import quality_loss, tag_loss
from training.methods.base import Method, register


@register("supervised")
class Supervised(Method):
    def __init__(self, model, quality_weight: float = 1.0, loss: str = "bce"):
        super().__init__(model, quality_weight)
        self.loss = loss

    def train_step(self, batch, unlabeled, step):
        tag_logits, q_logit = self.model(weak(batch["images"]))
        tag = tag_loss(self.loss, tag_logits, batch["labels"])
        qual = quality_loss(q_logit, batch["quality"])
        loss = tag + self.quality_weight * qual
        return loss, {"loss_tags": float(tag.detach()), "loss_quality": float(qual.detach())}
