"""FixMatch, multi-label, with per-tag adaptive thresholds.

The weak view of a creative gives per-tag probabilities ``p``. A tag becomes a
pseudo-positive where ``p >= tau_pos[t]``, a pseudo-negative where
``p <= tau_neg[t]``, and is ignored in between; the strong view is trained on
those pseudo-labels. Unlabeled creatives get pseudo-labels on every tag, labeled
ones on their *blank* tags.

Thresholds adapt per tag, in the spirit of FlexMatch/FreeMatch: each tag's
learning status is an EMA of the model's mean confidence ``|2p - 1|`` on it.
Normalised by the best-learned tag (``beta``) and warped by ``beta / (2 - beta)``
it moves the tag's threshold between ``tau_min`` and ``tau_max``, so rare or hard
tags, on which the model is still unsure, are not starved of pseudo-labels while
easy tags keep strict thresholds.
"""

from __future__ import annotations

import torch

from training.losses import known_mask, masked_bce, quality_loss, tag_loss
from training.methods.base import register
from training.methods.ema import TeacherMethod


def adaptive_thresholds(status: torch.Tensor, tau_min: float, tau_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tag (positive, negative) thresholds from per-tag learning status in [0, 1]."""
    beta = status / status.max().clamp_min(1e-6)
    warped = beta / (2 - beta)
    tau_pos = tau_min + (tau_max - tau_min) * warped
    return tau_pos, 1 - tau_pos


def pseudo_labels(probs: torch.Tensor, tau_pos: torch.Tensor, tau_neg: torch.Tensor) -> torch.Tensor:
    """1 above ``tau_pos``, 0 below ``tau_neg``, NaN (ignored) in between; per tag."""
    out = torch.full_like(probs, float("nan"))
    out[probs >= tau_pos] = 1.0
    out[probs <= tau_neg] = 0.0
    return out


@register("fixmatch")
class FixMatch(TeacherMethod):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        tau_min: float = 0.7,
        tau_max: float = 0.95,
        status_momentum: float = 0.99,
        unlabeled_weight: float = 1.0,
        loss: str = "bce",
        ema_decay: float = 0.99,
        unlabeled_ratio: int = 1,
        num_tags: int | None = None,
    ):
        super().__init__(model, quality_weight, ema_decay)  # the EMA is evaluated/exported: smoother
        self.tau_min, self.tau_max, self.m = tau_min, tau_max, status_momentum
        self.unlabeled_weight, self.loss, self.unlabeled_ratio = unlabeled_weight, loss, unlabeled_ratio
        n = num_tags or model.tag_head.out_features
        self.status = torch.zeros(n)  # per-tag learning status (EMA of confidence)

    @torch.no_grad()
    def _pseudo(self, images: torch.Tensor) -> torch.Tensor:
        was = self.model.training
        self.model.eval()
        tags, _ = self.model(self.weak(images))
        self.model.train(was)
        probs = torch.sigmoid(tags)
        self.status = self.status.to(probs.device)
        self.status.mul_(self.m).add_((2 * probs - 1).abs().mean(0), alpha=1 - self.m)
        tau_pos, tau_neg = adaptive_thresholds(self.status, self.tau_min, self.tau_max)
        return pseudo_labels(probs, tau_pos, tau_neg)

    def train_step(self, batch, unlabeled, step):
        x, y = batch["images"], batch["labels"]
        tags, q = self.model(self.weak(x))
        sup = tag_loss(self.loss, tags, y) + self.quality_weight * quality_loss(q, batch["quality"])
        # Blank tags of labeled creatives are pseudo-labelled too.
        blank = 1 - known_mask(y)
        pl = self._pseudo(x)
        s_tags, _ = self.model(self.strong(x, batch.get("crop_pool")))
        mask_l = known_mask(pl) * blank
        unsup_l = masked_bce(s_tags, pl, mask_l)
        unsup, used = unsup_l, float(mask_l.sum())
        total = float(blank.sum())
        if unlabeled is not None:
            u = unlabeled["images"]
            pu = self._pseudo(u)
            u_tags, _ = self.model(self.strong(u, unlabeled.get("crop_pool")))
            unsup = unsup + masked_bce(u_tags, pu)
            used += float(known_mask(pu).sum())
            total += pu.numel()
        loss = sup + self.unlabeled_weight * unsup
        tau_pos, _ = adaptive_thresholds(self.status, self.tau_min, self.tau_max)
        return loss, {
            "loss_sup": float(sup.detach()),
            "loss_unsup": float(unsup.detach()),
            "pseudo_label_rate": used / max(total, 1.0),
            "tau_pos_min": float(tau_pos.min()),
            "tau_pos_mean": float(tau_pos.mean()),
        }

    def state_dict(self):
        return super().state_dict() | {"status": self.status.cpu()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "status" in state:
            self.status = state["status"].clone()
