"""Class-aware pseudo-labels (CAP, Xie et al., NeurIPS 2023), multi-label, on an EMA teacher.

Once per epoch the EMA teacher scores the whole unlabeled pool. For each tag, the
pool's creatives are ranked by the teacher's probability; the top ``keep_pos`` x
prior share becomes a pseudo-positive and the bottom ``keep_neg`` x (1 - prior)
share a pseudo-negative, the rest is left blank. The prior is the tag's positive
rate among the known labels, corrected for the annotators' known miss and false
positive rates (``miss_rate``, ``fp_rate``; ``training.metrics.noise_corrected_prior``).

Why ranks and priors rather than one confidence threshold: a rare defect tag has
few confident positives, so a fixed (or FixMatch's confidence-driven) threshold
starves exactly the tags that need pseudo-labels most, while a tag's share of the
pool is stable and known. The same per-tag thresholds label the *blank* tags of
labeled creatives. The student learns the pseudo-labels on the strong view; the
EMA teacher is evaluated and exported.
"""

from __future__ import annotations

import numpy as np
import torch

from training.losses import known_mask, masked_bce, quality_loss, tag_loss
from training.methods.base import register
from training.methods.ema import TeacherMethod
from training.metrics import noise_corrected_prior
from training.predict import forward_views


def class_aware_pseudo_labels(
    probs: np.ndarray, prior: np.ndarray, keep_pos: float, keep_neg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-tag rank-based pseudo-labels for a pool: ``(labels (N, T) in {1, 0, NaN}, tau_pos (T,), tau_neg (T,))``."""
    n, t = probs.shape
    labels = np.full((n, t), np.nan, dtype=np.float32)
    tau_pos, tau_neg = np.ones(t, np.float32), np.zeros(t, np.float32)
    for j in range(t):
        order = np.argsort(-probs[:, j], kind="stable")  # most likely positive first
        n_pos = int(np.floor(keep_pos * prior[j] * n))
        n_neg = int(np.floor(keep_neg * (1 - prior[j]) * n))
        labels[order[:n_pos], j] = 1.0
        labels[order[n - n_neg :], j] = 0.0
        if n_pos:
            tau_pos[j] = probs[order[n_pos - 1], j]
        if n_neg:
            tau_neg[j] = probs[order[n - n_neg], j]
    return labels, tau_pos, tau_neg


@register("cap")
class ClassAwarePseudoLabels(TeacherMethod):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        miss_rate: float = 0.0,
        fp_rate: float = 0.0,
        keep_pos: float = 0.8,
        keep_neg: float = 0.9,
        warmup_epochs: int = 2,
        unlabeled_weight: float = 1.0,
        loss: str = "bce",
        ema_decay: float = 0.99,
        unlabeled_ratio: int = 1,
    ):
        super().__init__(model, quality_weight, ema_decay)
        self.miss_rate, self.fp_rate = miss_rate, fp_rate
        self.keep_pos, self.keep_neg, self.warmup_epochs = keep_pos, keep_neg, warmup_epochs
        self.unlabeled_weight, self.loss, self.unlabeled_ratio = unlabeled_weight, loss, unlabeled_ratio
        self.pool_labels: torch.Tensor | None = None  # (N_pool, T) pseudo-labels, NaN = none
        self.tau_pos: torch.Tensor | None = None
        self.tau_neg: torch.Tensor | None = None

    def priors(self, labels: np.ndarray) -> np.ndarray:
        known = ~np.isnan(labels)
        observed = np.where(known, labels, 0).sum(0) / np.maximum(known.sum(0), 1)
        return np.array([noise_corrected_prior(float(o), self.miss_rate, self.fp_rate) for o in observed])

    @torch.no_grad()
    def on_epoch_start(self, epoch, labeled, device, unlabeled=None):
        if epoch < self.warmup_epochs:
            return {}
        pool = unlabeled if unlabeled is not None and len(unlabeled) else labeled
        probs = torch.sigmoid(forward_views(self.ema.model, pool.views, device, 256)[0])
        prior = self.priors(labeled.labels.numpy())
        pl, tp, tn = class_aware_pseudo_labels(probs.numpy(), prior, self.keep_pos, self.keep_neg)
        self.pool_labels = torch.from_numpy(pl) if pool is unlabeled else None
        self.tau_pos, self.tau_neg = torch.from_numpy(tp), torch.from_numpy(tn)
        return {"pseudo_pos_rate": float(np.nanmean(pl == 1)), "pseudo_label_rate": float((~np.isnan(pl)).mean())}

    def train_step(self, batch, unlabeled, step):
        x, y = batch["images"], batch["labels"]
        tags, q = self.model(self.strong(x, batch.get("crop_pool")))
        sup = tag_loss(self.loss, tags, y) + self.quality_weight * quality_loss(q, batch["quality"])
        logs = {"loss_sup": float(sup.detach())}
        if self.tau_pos is None:  # warm-up: labels only
            return sup, logs
        # Blank tags of labeled creatives: the teacher's probability against the tag's rank thresholds.
        t_probs, _ = self.ema.probs(self.weak(x))
        tp, tn = self.tau_pos.to(x.device), self.tau_neg.to(x.device)
        pl = torch.full_like(t_probs, float("nan"))
        pl[t_probs >= tp] = 1.0
        pl[t_probs <= tn] = 0.0
        unsup = masked_bce(tags, pl, known_mask(pl) * (1 - known_mask(y)))
        if unlabeled is not None and self.pool_labels is not None:
            pu = self.pool_labels.to(x.device)[unlabeled["index"]]
            u_tags, _ = self.model(self.strong(unlabeled["images"], unlabeled.get("crop_pool")))
            unsup = unsup + masked_bce(u_tags, pu)
        logs["loss_unsup"] = float(unsup.detach())
        return sup + self.unlabeled_weight * unsup, logs

    def state_dict(self):
        return super().state_dict() | {"pool_labels": self.pool_labels, "tau": (self.tau_pos, self.tau_neg)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.pool_labels = state.get("pool_labels")
        self.tau_pos, self.tau_neg = state.get("tau", (None, None))
