"""Supervised training on the labeled set: a masked tag loss on known tags plus the quality loss.

``loss`` picks the tag loss: ``bce``, or a robust one for noisy labels, ``asl``
(asymmetric loss), ``gce`` (generalized cross-entropy), ``hill`` or ``forward`` (BCE corrected
for known annotator miss and false-positive rates); ``loss_params`` are its parameters. For a fair comparison with
the semi-supervised methods it trains on the same strong view (``augment: strong``;
``weak`` for flips only) and is evaluated and exported through the same EMA of its
weights (``ema_decay``): what separates them is then the unlabeled data alone.
"""

from __future__ import annotations

from training.losses import quality_loss, tag_loss
from training.methods.base import register
from training.methods.ema import TeacherMethod


@register("supervised")
class Supervised(TeacherMethod):
    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        loss: str = "bce",
        augment: str = "strong",
        ema_decay: float = 0.99,
        loss_params: dict | None = None,
    ):
        if augment not in ("strong", "weak"):
            raise ValueError(f"augment must be 'strong' or 'weak', got {augment!r}")
        super().__init__(model, quality_weight, ema_decay)
        self.loss, self.augment, self.loss_params = loss, augment, dict(loss_params or {})

    def train_step(self, batch, unlabeled, step):
        x = batch["images"]
        x = self.strong(x, batch.get("crop_pool")) if self.augment == "strong" else self.weak(x)
        tag_logits, q_logit = self.model(x)
        tag = tag_loss(self.loss, tag_logits, batch["labels"], **self.loss_params)
        qual = quality_loss(q_logit, batch["quality"])
        loss = tag + self.quality_weight * qual
        return loss, {"loss_tags": float(tag.detach()), "loss_quality": float(qual.detach())}
