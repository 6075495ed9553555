"""Noisy and missing labels: large-loss rejection or correction (LL-R / LL-Ct), a Hill or SPLC loss,
and doubtful labels from cross-validation, on the supervised arm (strong view, EMA).

* Large-loss (Kim et al., CVPR 2022): a given 0 that the model fits worst is most likely a
  missed positive. Each step, the ``rate`` share of the batch's given 0s with the largest
  loss is rejected (``mode: reject``: made blank) or flipped to 1 (``mode: correct``), with
  ``rate`` growing by ``rate_per_epoch`` up to ``max_rate`` (a model memorises its wrong
  labels late, so early large losses say the most).
* ``loss: hill`` (or ``asl``) softens the push against confident predictions on given 0s;
  ``splc_tau`` turns given 0s predicted above it into 1s (self-paced label correction).
* ``doubtful``: the CSV of ``creative-qa label-issues`` (out-of-fold predictions: a label's
  model never saw it, so it cannot have memorised it). Its top ``doubtful_top`` labels are
  blanked before training — rather than judging labels in-sample, as a GMM over a
  teacher's losses does.
"""

from __future__ import annotations

from training.losses import large_loss_targets, quality_loss, splc_targets, tag_loss
from training.methods.base import register
from training.methods.ema import TeacherMethod


@register("large_loss")
class LargeLoss(TeacherMethod):
    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        mode: str = "reject",
        rate_per_epoch: float = 0.01,
        max_rate: float = 0.1,
        loss: str = "bce",
        splc_tau: float | None = None,
        doubtful: str | None = None,
        doubtful_top: int = 0,
        ema_decay: float = 0.99,
    ):
        if mode not in ("reject", "correct"):
            raise ValueError(f"mode must be 'reject' or 'correct', got {mode!r}")
        super().__init__(model, quality_weight, ema_decay, doubtful=doubtful, doubtful_top=doubtful_top)
        self.mode, self.rate_per_epoch, self.max_rate = mode, rate_per_epoch, max_rate
        self.loss, self.splc_tau = loss, splc_tau
        self.rate = 0.0

    def on_epoch_start(self, epoch, labeled, device, unlabeled=None):
        self.rate = min(self.max_rate, self.rate_per_epoch * epoch)
        return super().on_epoch_start(epoch, labeled, device, unlabeled) | {"large_loss_rate": self.rate}

    def train_step(self, batch, unlabeled, step):
        y = self.given_labels(batch)
        tags, q = self.model(self.strong(batch["images"], batch.get("crop_pool")))
        if self.rate > 0:
            y = large_loss_targets(tags.detach(), y, self.rate, correct=self.mode == "correct")
        if self.splc_tau is not None:
            y = splc_targets(tags.detach(), y, self.splc_tau)
        sup = tag_loss(self.loss, tags, y)
        qual = quality_loss(q, batch["quality"])
        return sup + self.quality_weight * qual, {
            "loss_sup": float(sup.detach()),
            "loss_quality": float(qual.detach()),
        }

    def state_dict(self):
        return super().state_dict() | {"rate": self.rate}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.rate = state.get("rate", 0.0)
