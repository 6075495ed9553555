"""Virtual adversarial training (Miyato et al. 2018), multi-label, in the model's embedding space.

The adversarial direction comes from one power iteration: a random unit direction ``d``
scaled by ``xi`` is added to the creative's features ``f``; the gradient of the per-tag
Bernoulli KL between the predictions at ``f`` and ``f + xi d`` gives the direction in
which the prediction changes fastest; ``r_adv`` is that direction scaled to ``eps`` x
``||f||`` (per creative). The loss is the KL between the (detached) predictions at ``f``
and at ``f + r_adv``, on labeled and unlabeled creatives alike (it needs no label). Working
on features rather than pixels keeps every tag true (a pixel perturbation can add noise,
the very defect being scored) and lets it run on pre-extracted embeddings too.
"""

from __future__ import annotations

import torch

from training.losses import bernoulli_kl, quality_loss, tag_loss
from training.methods.base import register
from training.methods.ema import TeacherMethod


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def vat_direction(head, f: torch.Tensor, xi: float, eps: float, generator: torch.Generator | None = None):
    """``r_adv`` ``(N, D)`` with ``||r_adv_i|| = eps * ||f_i||``, from one power iteration on ``head``'s KL."""
    f = f.detach()
    d = _unit(torch.randn(f.shape, generator=generator).to(f))
    d.requires_grad_(True)
    with torch.enable_grad():
        kl = bernoulli_kl(head(f), head(f + xi * d))
        (grad,) = torch.autograd.grad(kl, d)
    return eps * f.flatten(1).norm(dim=1, keepdim=True) * _unit(grad)


@register("vat")
class VAT(TeacherMethod):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        eps: float = 0.1,
        xi: float = 1e-3,
        vat_weight: float = 1.0,
        loss: str = "bce",
        ema_decay: float = 0.99,
        unlabeled_ratio: int = 1,
    ):
        super().__init__(model, quality_weight, ema_decay)
        self.eps, self.xi, self.vat_weight, self.loss, self.unlabeled_ratio = eps, xi, vat_weight, loss, unlabeled_ratio

    def lds(self, images: torch.Tensor) -> torch.Tensor:
        """Local distributional smoothness at the weak view's features."""
        f = self.model.features(self.weak(images))
        head = self.model.tag_head  # NOTE: no dropout inside the KL, or the direction is mostly dropout noise
        r = vat_direction(head, f, self.xi, self.eps)
        return bernoulli_kl(head(f).detach(), head(f + r))

    def train_step(self, batch, unlabeled, step):
        tags, q = self.model(self.strong(batch["images"], batch.get("crop_pool")))
        sup = tag_loss(self.loss, tags, batch["labels"]) + self.quality_weight * quality_loss(q, batch["quality"])
        lds = self.lds(batch["images"])
        if unlabeled is not None:
            lds = lds + self.lds(unlabeled["images"])
        return sup + self.vat_weight * lds, {"loss_sup": float(sup.detach()), "loss_vat": float(lds.detach())}
