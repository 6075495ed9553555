"""Noisy Student, multi-label: a frozen teacher pseudo-labels, a noised student learns.

The teacher (a checkpoint of an earlier round) sees the *clean* weak view of each
unlabeled creative and of each labeled creative's blank tags; its probabilities
are the targets, soft (``soft: true``) or hardened at 0.5, and a tag is used only
where the teacher is confident (``|2p - 1| >= confidence``). The student sees the
strong view and trains with dropout and stochastic depth (``model.drop_rate``,
``model.drop_path_rate``): the noise is what lets it outgrow its teacher.

Rounds are run by ``training.rounds.noisy_student``: round 0 trains the first
teacher on labels alone, and each later round's student becomes the next teacher;
each round is its own MLflow run under one parent.
"""

from __future__ import annotations

import torch

from training.augment import strong, weak
from training.losses import known_mask, masked_bce, quality_loss, tag_loss
from training.methods.base import Method, register


@register("noisy_student")
class NoisyStudent(Method):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        teacher: str | None = None,
        soft: bool = True,
        confidence: float = 0.5,
        unlabeled_weight: float = 1.0,
        loss: str = "bce",
        unlabeled_ratio: int = 1,
    ):
        super().__init__(model, quality_weight)
        self.teacher_path, self.soft, self.confidence = teacher, soft, confidence
        self.unlabeled_weight, self.loss, self.unlabeled_ratio = unlabeled_weight, loss, unlabeled_ratio
        self.teacher = None
        if teacher:
            from training.model import model_from_checkpoint  # noqa: PLC0415

            self.teacher = model_from_checkpoint(teacher).to(next(model.parameters()).device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    @torch.no_grad()
    def _targets(self, images: torch.Tensor) -> torch.Tensor:
        tags, _ = self.teacher(weak(images))
        p = torch.sigmoid(tags)
        t = p if self.soft else (p >= 0.5).float()
        return t.masked_fill((2 * p - 1).abs() < self.confidence, float("nan"))

    def train_step(self, batch, unlabeled, step):
        x, y = batch["images"], batch["labels"]
        tags, q = self.model(strong(x))
        sup = tag_loss(self.loss, tags, y) + self.quality_weight * quality_loss(q, batch["quality"])
        if self.teacher is None:  # round 0: the first teacher learns from labels alone
            return sup, {"loss_sup": float(sup.detach())}
        blank = 1 - known_mask(y)
        pl = self._targets(x)
        unsup = masked_bce(tags, pl, known_mask(pl) * blank)
        used = float((known_mask(pl) * blank).sum())
        if unlabeled is not None:
            u = unlabeled["images"]
            pu = self._targets(u)
            u_tags, _ = self.model(strong(u))
            unsup = unsup + masked_bce(u_tags, pu)
            used += float(known_mask(pu).sum())
        loss = sup + self.unlabeled_weight * unsup
        return loss, {"loss_sup": float(sup.detach()), "loss_unsup": float(unsup.detach()), "pseudo_labels": used}
