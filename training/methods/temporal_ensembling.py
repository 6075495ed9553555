"""Temporal Ensembling (Laine & Aila 2017), multi-label: agree with your own past predictions.

The method keeps, per creative (labeled and unlabeled separately), an exponential moving
average ``Z`` of the network's past tag probabilities; the target is ``Z`` corrected for
its start-up bias, ``Z / (1 - alpha^n)`` after ``n`` updates. The consistency weight is
ramped, ``w(t) = consistency * exp(-5 (1 - t)^2)``. Blank tags of labeled creatives and
every tag of unlabeled ones are targets; ``Z`` travels in checkpoints.
"""

from __future__ import annotations

import torch

from training.losses import consistency_loss, known_mask, quality_loss, tag_loss
from training.methods.base import register
from training.methods.ema import TeacherMethod, sigmoid_rampup


class Ensemble:
    """Per-sample EMA of predictions with bias correction."""

    def __init__(self, n: int, t: int, alpha: float):
        self.alpha = alpha
        self.z = torch.zeros(n, t)
        self.n = torch.zeros(n)

    def target(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bias-corrected targets ``(B, T)`` and a ``(B, 1)`` mask of samples seen at least once."""
        idx = index.cpu()
        seen = self.n[idx] > 0
        corr = (1 - self.alpha ** self.n[idx].clamp_min(1)).unsqueeze(1)
        return (self.z[idx] / corr).to(index.device), seen.float().unsqueeze(1).to(index.device)

    def update(self, index: torch.Tensor, probs: torch.Tensor) -> None:
        idx = index.cpu()
        self.z[idx] = self.alpha * self.z[idx] + (1 - self.alpha) * probs.detach().float().cpu()
        self.n[idx] += 1


@register("temporal_ensembling")
class TemporalEnsembling(TeacherMethod):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        alpha: float = 0.6,
        consistency: float = 10.0,
        rampup_steps: int = 200,
        loss: str = "bce",
        ema_decay: float = 0.99,
        unlabeled_ratio: int = 1,
    ):
        super().__init__(model, quality_weight, ema_decay)
        self.alpha, self.consistency, self.rampup_steps = alpha, consistency, rampup_steps
        self.loss, self.unlabeled_ratio = loss, unlabeled_ratio
        self.ens: dict[str, Ensemble] = {}

    def on_epoch_start(self, epoch, labeled, device, unlabeled=None):
        t = labeled.labels.shape[1]
        self.ens.setdefault("labeled", Ensemble(len(labeled), t, self.alpha))
        if unlabeled is not None:
            self.ens.setdefault("unlabeled", Ensemble(len(unlabeled), t, self.alpha))
        return {}

    def _cons(self, name: str, b: dict[str, torch.Tensor], tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ens = self.ens.get(name)
        if ens is None:
            return tags.sum() * 0.0
        target, seen = ens.target(b["index"])
        loss = consistency_loss(tags, target, mask * seen)
        ens.update(b["index"], torch.sigmoid(tags))
        return loss

    def train_step(self, batch, unlabeled, step):
        tags, q = self.model(self.strong(batch["images"], batch.get("crop_pool")))
        sup = tag_loss(self.loss, tags, batch["labels"]) + self.quality_weight * quality_loss(q, batch["quality"])
        cons = self._cons("labeled", batch, tags, 1 - known_mask(batch["labels"]))
        if unlabeled is not None:
            u_tags, _ = self.model(self.strong(unlabeled["images"], unlabeled.get("crop_pool")))
            cons = cons + self._cons("unlabeled", unlabeled, u_tags, torch.ones_like(u_tags))
        w = self.consistency * sigmoid_rampup(step, self.rampup_steps)
        return sup + w * cons, {"loss_sup": float(sup.detach()), "loss_cons": float(cons.detach()), "cons_weight": w}

    def state_dict(self):
        return super().state_dict() | {"ensembles": {k: (e.z, e.n) for k, e in self.ens.items()}}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        for k, (z, n) in state.get("ensembles", {}).items():
            e = Ensemble(z.shape[0], z.shape[1], self.alpha)
            e.z, e.n = z.clone(), n.clone()
            self.ens[k] = e
