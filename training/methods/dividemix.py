"""Noisy labels, multi-label and with blanks: per-tag loss modelling as in DivideMix.

Every epoch after a warm-up, the EMA teacher's per-sample BCE is computed for every
*known* label. For each tag, and separately for labels given as 1 and as 0, a
two-component Gaussian mixture (scikit-learn's) is fitted to those losses; the
posterior of the low-loss component is the probability that the label is clean.
Splitting by the given value matters in multi-label data: positives are rare and
learned later, so one mixture over both would call every positive noisy. The
most common annotator error, a *missed positive* (given 0, truly 1), shows up as a
high-loss 0 and is caught by the 0-group's mixture.

Labels judged likely wrong (clean probability < ``clean_threshold``) are dropped to
blank and handed to the semi-supervised loss: the teacher's probabilities supervise
them, as they do blank tags and unlabeled creatives (Mean Teacher consistency).
Kept labels are refined towards the teacher, ``w * y + (1 - w) * p_teacher`` with
``w`` the clean probability (DivideMix's label refinement). The tag loss can be
robust (``loss: asl`` or ``gce``).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from training.losses import consistency_loss, known_mask, per_sample_bce, quality_loss, tag_loss
from training.methods.base import register
from training.methods.ema import TeacherMethod, sigmoid_rampup
from training.predict import forward_views


def clean_probability(losses: np.ndarray, labels: np.ndarray, min_group: int = 20, seed: int = 0) -> np.ndarray:
    """Per (sample, tag) probability that the given label is clean; NaN where the label is unknown.

    ``losses`` and ``labels`` are ``(N, T)``. Each tag's known labels are split by
    their given value and a 2-component GMM is fitted to each group's losses
    (min-max normalised, as DivideMix does). Groups too small to model are kept clean.
    """
    out = np.full(losses.shape, np.nan, dtype=np.float64)
    for t in range(losses.shape[1]):
        for value in (0.0, 1.0):
            rows = np.flatnonzero(labels[:, t] == value)
            if len(rows) == 0:
                continue
            out[rows, t] = 1.0
            x = losses[rows, t].astype(np.float64)
            if len(rows) < min_group or np.ptp(x) < 1e-6:
                continue
            x = (x - x.min()) / np.ptp(x)
            gmm = GaussianMixture(n_components=2, max_iter=30, tol=1e-3, reg_covar=5e-4, random_state=seed)
            gmm.fit(x.reshape(-1, 1))
            clean = int(np.argmin(gmm.means_.ravel()))
            out[rows, t] = gmm.predict_proba(x.reshape(-1, 1))[:, clean]
    return out


@register("dividemix")
class DivideMix(TeacherMethod):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        warmup_epochs: int = 2,
        clean_threshold: float = 0.5,
        refine: bool = True,
        consistency: float = 10.0,
        rampup_steps: int = 200,
        ema_decay: float = 0.99,
        loss: str = "bce",
        unlabeled_ratio: int = 1,
    ):
        super().__init__(model, quality_weight, ema_decay)
        self.warmup_epochs, self.clean_threshold, self.refine = warmup_epochs, clean_threshold, refine
        self.consistency, self.rampup_steps, self.loss = consistency, rampup_steps, loss
        self.unlabeled_ratio = unlabeled_ratio
        self.clean: torch.Tensor | None = None  # (N_train, T) clean probability, NaN = unknown

    @torch.no_grad()
    def on_epoch_start(self, epoch, labeled, device, unlabeled=None):
        if epoch < self.warmup_epochs:
            return {}
        tags, _ = forward_views(self.ema.model, labeled.views, device, 128)
        loss = per_sample_bce(tags, labeled.labels).numpy()
        prob = clean_probability(loss, labeled.labels.numpy())
        self.clean = torch.from_numpy(prob).float()
        known = ~np.isnan(prob)
        flagged = (prob[known] < self.clean_threshold).mean() if known.any() else 0.0
        return {"noisy_label_rate": float(flagged)}

    def targets(self, labels: torch.Tensor, index: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Labels with likely-wrong entries blanked and the rest refined towards the teacher."""
        if self.clean is None:
            return labels
        w = self.clean.to(labels.device)[index]
        wrong = w < self.clean_threshold
        out = labels.clone()
        if self.refine:
            out = torch.where(torch.isnan(w), out, w * out + (1 - w) * teacher)
        out[wrong] = float("nan")
        return out

    def train_step(self, batch, unlabeled, step):
        x = batch["images"]
        t_probs, _ = self.ema.probs(self.weak(x))
        y = self.targets(batch["labels"], batch["index"], t_probs)
        tags, q = self.model(self.strong(x, batch.get("crop_pool")))
        sup = tag_loss(self.loss, tags, y) + self.quality_weight * quality_loss(q, batch["quality"])
        cons = consistency_loss(tags, t_probs, 1 - known_mask(y))  # blank and dropped labels
        if unlabeled is not None:
            cons = cons + self.unlabeled_consistency(unlabeled)
        w = self.consistency * sigmoid_rampup(step, self.rampup_steps)
        return sup + w * cons, {
            "loss_sup": float(sup.detach()),
            "loss_cons": float(cons.detach()),
            "dropped_labels": float((torch.isnan(y) & ~torch.isnan(batch["labels"])).float().mean()),
        }

    def state_dict(self):
        return super().state_dict() | {"clean": self.clean}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.clean = state.get("clean")
