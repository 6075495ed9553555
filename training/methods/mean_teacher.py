"""Mean Teacher, multi-label: an EMA teacher's probabilities supervise the student wherever labels are missing.

Consistency (MSE between sigmoid outputs) is applied on every tag of unlabeled
creatives and on the *blank* tags of labeled ones, with a ramped-up weight; the
teacher is what gets evaluated and exported.
"""

from __future__ import annotations

from training.losses import consistency_loss, known_mask, quality_loss, tag_loss
from training.methods.base import register
from training.methods.ema import TeacherMethod, sigmoid_rampup


@register("mean_teacher")
class MeanTeacher(TeacherMethod):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        ema_decay: float = 0.99,
        consistency: float = 10.0,
        rampup_steps: int = 200,
        loss: str = "bce",
        loss_params: dict | None = None,
        unlabeled_ratio: int = 1,
        consistency_kind: str = "mse",
        quality_consistency: float = 0.0,
        doubtful: str | None = None,
        doubtful_top: int = 0,
    ):
        super().__init__(
            model, quality_weight, ema_decay, consistency_kind, quality_consistency, doubtful, doubtful_top
        )
        self.consistency, self.rampup_steps, self.loss = consistency, rampup_steps, loss
        self.loss_params = dict(loss_params or {})
        self.unlabeled_ratio = unlabeled_ratio

    def train_step(self, batch, unlabeled, step):
        x = batch["images"]
        if not self.consistency:  # no consistency term: no teacher pass and no pass over the pool
            tags, q = self.model(self.strong(x, batch.get("crop_pool")))
            sup = self._supervised(tags, q, batch)
            return sup, {"loss_sup": float(sup.detach())}
        t_probs, t_q = self.ema.probs(self.weak(x))
        tags, q = self.model(self.strong(x, batch.get("crop_pool")))
        sup = self._supervised(tags, q, batch)
        cons = consistency_loss(
            tags, t_probs, 1 - known_mask(self.given_labels(batch)), self.consistency_kind
        )  # blanks
        if unlabeled is not None:
            cons = cons + self.unlabeled_consistency(unlabeled)
        w = self.consistency * sigmoid_rampup(step, self.rampup_steps)
        loss = sup + w * cons
        return loss, {
            "loss_sup": float(sup.detach()),
            "loss_cons": float(cons.detach()),
            "cons_weight": w,
            "teacher_quality_mean": float(t_q.mean()),
        }

    def _supervised(self, tags, q, batch):
        tag = tag_loss(self.loss, tags, self.given_labels(batch), **self.loss_params)
        return tag + self.quality_weight * quality_loss(q, batch["quality"])
