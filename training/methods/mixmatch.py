"""MixMatch (Berthelot et al. 2019), multi-label, mixing in embedding space.

Unlabeled creatives get a label guess: the average of the network's probabilities over
``k`` weak views, sharpened per tag (temperature ``T``). Labeled and unlabeled creatives
are then mixed up with ``lambda' = max(lambda, 1 - lambda)``, ``lambda ~ Beta(alpha,
alpha)``, so each mix stays closer to its first member. The mix happens on the features,
not the pixels: a half-mixed noisy creative is not noisy by DESIGN.md's definition (noise
std halves), so pixel mixup would teach wrong labels, while the heads are linear in the
features. A blank label mixed with anything stays blank (NaN propagates), so blanks are
never negatives. Labeled mixes train with BCE, unlabeled ones with the squared error, ramped.
"""

from __future__ import annotations

import torch

from training.losses import known_mask, masked_bce, quality_loss, sharpen
from training.methods.base import register
from training.methods.ema import TeacherMethod, sigmoid_rampup


def mix_lambda(alpha: float) -> float:
    """``max(lambda, 1 - lambda)`` with ``lambda ~ Beta(alpha, alpha)``: always >= 0.5."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    return max(lam, 1 - lam)


def mixup(f: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam * a + (1 - lam) * a[perm]`` for features and targets (a NaN target stays NaN)."""
    return lam * f + (1 - lam) * f[perm], lam * y + (1 - lam) * y[perm]


@register("mixmatch")
class MixMatch(TeacherMethod):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        k: int = 2,
        temperature: float = 0.5,
        alpha: float = 0.75,
        unlabeled_weight: float = 10.0,
        rampup_steps: int = 200,
        ema_decay: float = 0.99,
        unlabeled_ratio: int = 1,
    ):
        super().__init__(model, quality_weight, ema_decay)
        self.k, self.temperature, self.alpha = k, temperature, alpha
        self.unlabeled_weight, self.rampup_steps, self.unlabeled_ratio = unlabeled_weight, rampup_steps, unlabeled_ratio

    @torch.no_grad()
    def guess(self, images: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.sigmoid(self.model(self.weak(images))[0]) for _ in range(self.k)]).mean(0)
        return sharpen(p, self.temperature)

    def train_step(self, batch, unlabeled, step):
        x, y = batch["images"], batch["labels"]
        f_x = self.model.features(self.weak(x))
        q_sup = quality_loss(self.model.heads(f_x)[1], batch["quality"])
        if unlabeled is None:
            f, targets, n_x = f_x, y, len(x)
        else:
            u = unlabeled["images"]
            f = torch.cat([f_x, self.model.features(self.weak(u))])
            targets, n_x = torch.cat([y, self.guess(u)]), len(x)
        lam = mix_lambda(self.alpha)
        mixed_f, mixed_y = mixup(f, targets, lam, torch.randperm(len(f), device=f.device))
        tags, _ = self.model.heads(mixed_f)
        sup = masked_bce(tags[:n_x], mixed_y[:n_x])
        unsup = tags.sum() * 0.0
        if len(f) > n_x:
            m = known_mask(mixed_y[n_x:])
            unsup = ((torch.sigmoid(tags[n_x:]) - torch.nan_to_num(mixed_y[n_x:])) ** 2 * m).sum() / m.sum().clamp_min(
                1
            )
        w = self.unlabeled_weight * sigmoid_rampup(step, self.rampup_steps)
        loss = sup + self.quality_weight * q_sup + w * unsup
        return loss, {"loss_sup": float(sup.detach()), "loss_unsup": float(unsup.detach()), "lambda": lam}
