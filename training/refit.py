"""The last training stage: the tag head refitted on the labeled set, over the trained features.

Every recipe trains its tag head together with the backbone, on whatever its method feeds it: the
default's synthesised defects on the pool (labels the generator made, not the team), a teacher's
pseudo-labels, or noisy labels memorised late in training. The features come out better than the head
that reads them: a logistic regression refitted on the team's own labeled set, over the same frozen
features, ranks better on every split of the regime grid, most on creatives unlike the training set
(last-layer retraining: Kirichenko et al. 2022, "Last layer re-training is sufficient for robustness to
spurious correlations"; Kumar et al. 2022 on linear probing over fine-tuned features).

The refit (``refit_head``):

* features: the eval model's head input (``CreativeModel.features``) of the labeled training split,
  without augmentation, at most ``head.max_rows`` creatives (a seeded sample beyond that);
* each feature standardised over those rows, the backbone's block scaled by ``head.backbone_scale``
  (below 1: the backbone's hundreds of features pay more for their weight than the grid view's and
  the measurements' few, which carry evidence that holds on creatives unlike the training set);
* per tag, a logistic regression with an L2 penalty of ``1 / (2 head.c)`` on the weights, its loss the
  recipe's forward correction for the annotators' rates where the recipe corrects (``loss: forward``),
  plain binary cross-entropy otherwise; blank labels ignored; L-BFGS from zero weights (deterministic);
* mixed with the trained head on the tags the recipe's method taught from more than the labels
  (``Method.taught_tags``: the defects it synthesised on the pool, labels no annotator gave):
  ``head.keep`` of the trained head's logits and ``1 - head.keep`` of the refit's (both linear in the same
  features, so one head's weight and bias). A refit on the labeled set alone drops what the pool taught;
  a recipe that sees only the labels (supervised training) has no such tags and keeps none;
* folded back into the tag head's weight and bias: the exported graph is unchanged in shape, the refit
  is in its numbers. The quality head is left as trained.

``head.backbone_scale`` and ``head.c`` were chosen on the regime grid's held-out split (its validation:
``benchmarks/RESULTS.md``), over two label regimes and two recipes; ``head.keep`` (0.25, on the taught tags
only) on the same split over all four cells (``benchmarks/head_refit.py``). Tags with fewer than two known
positives or negatives keep the trained head's row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from training.config import HeadConfig
from training.losses import forward_bce
from training.predict import head_features

log = logging.getLogger(__name__)


@dataclass
class RefitReport:
    rows: int  # labeled creatives the head was refitted on
    tags: int  # tags refitted (the others kept the trained head's row)
    seconds: float
    loss_before: float  # the refit's objective (per known label, without the penalty) for the trained head ...
    loss_after: float  # ... and for the refitted one


def recipe_rates(method_params: dict) -> tuple[float, float]:
    """The annotators' ``(miss, false-positive)`` rates a recipe corrects its loss for (``loss: forward``), else 0."""
    given = (method_params.get("loss_params") or {}) if method_params.get("loss") == "forward" else {}
    return float(given.get("miss_rate", 0.0)), float(given.get("fp_rate", 0.0))


def fit_logistic(
    x: torch.Tensor,
    labels: torch.Tensor,
    scale: torch.Tensor,
    c: float,
    miss_rate: float = 0.0,
    fp_rate: float = 0.0,
    max_iter: int = 200,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-tag L2 logistic regressions on standardised, ``scale``d features, all tags at once.

    ``x``: ``(N, F)`` features; ``labels``: ``(N, T)`` with NaN blanks. Returns ``(weight (T, F), bias (T,),
    fitted (T,) bool)`` on the *raw* features: ``x @ weight.T + bias`` are the logits. Tags without two
    known positives and two known negatives are not fitted (their rows are zero and ``fitted`` False).
    """
    x = x.double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    factor = scale.double() / sd
    z = (x - mu) * factor
    known = ~torch.isnan(labels)
    y = torch.nan_to_num(labels).double()
    pos, neg = (y * known).sum(0), ((1 - y) * known).sum(0)
    fitted = (pos >= 2) & (neg >= 2)
    t = int(fitted.sum())
    w = torch.zeros(z.shape[1], t, dtype=torch.float64, requires_grad=True)
    prior = ((pos[fitted] + 0.5) / (known.sum(0)[fitted] + 1.0)).clamp(1e-3, 1 - 1e-3)
    b = torch.logit(prior).clone().requires_grad_(True)
    yk, mk = labels[:, fitted].double(), known[:, fitted].double()
    n_known = mk.sum().clamp_min(1.0)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        nll = forward_bce(z @ w + b, yk, mk, miss_rate, fp_rate) * n_known
        loss = nll + 0.5 / c * (w**2).sum()
        loss.backward()
        return loss

    if t:
        opt.step(closure)
    weight = torch.zeros(labels.shape[1], x.shape[1], dtype=torch.float64)
    bias = torch.zeros(labels.shape[1], dtype=torch.float64)
    with torch.no_grad():
        weight[fitted] = (w * factor[:, None]).T
        bias[fitted] = b - (mu * factor) @ w
    return weight.float(), bias.float(), fitted


def refit_head(
    model: nn.Module,
    views,
    labels: torch.Tensor,
    device: torch.device,
    backbone_features: int,
    settings: HeadConfig | None = None,
    rates: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
    kept: torch.Tensor | None = None,
) -> RefitReport:
    """Refit ``model.tag_head`` in place on ``views`` / ``labels`` (see the module doc) with ``settings`` (``head.*``)
    and the annotators' ``(miss, false-positive)`` rates; the first ``backbone_features`` feature columns are the
    backbone's. ``kept``: the tags (a bool per head row) that keep ``head.keep`` of the trained head (None: none)."""
    h = settings or HeadConfig()
    miss_rate, fp_rate = rates
    max_rows, backbone_scale, c = h.max_rows, h.backbone_scale, h.c
    t0 = time.time()
    n = len(labels)
    rows = np.arange(n)
    if n > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
        views = views[rows] if isinstance(views, np.ndarray) else views.take(rows)
    y = labels[torch.as_tensor(rows)].float()
    x = head_features(model, views, device)
    scale = torch.ones(x.shape[1])
    scale[:backbone_features] = backbone_scale
    head = model.tag_head
    old_w, old_b = head.weight.detach().float().cpu(), head.bias.detach().float().cpu()
    weight, bias, fitted = fit_logistic(x, y, scale, c, miss_rate, fp_rate)
    weight[~fitted], bias[~fitted] = old_w[~fitted], old_b[~fitted]
    if h.keep and kept is not None:  # logits mixed with the trained head's: one linear head over the same features
        rows = torch.as_tensor(kept, dtype=torch.bool)
        weight[rows] = h.keep * old_w[rows] + (1 - h.keep) * weight[rows]
        bias[rows] = h.keep * old_b[rows] + (1 - h.keep) * bias[rows]

    def objective(wt: torch.Tensor, bs: torch.Tensor) -> float:
        k = ~torch.isnan(y[:, fitted])
        return float(forward_bce(x @ wt[fitted].T + bs[fitted], y[:, fitted], k.float(), miss_rate, fp_rate))

    before, after = objective(old_w, old_b), objective(weight, bias)
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight))
        head.bias.copy_(bias.to(head.bias))
    return RefitReport(len(rows), int(fitted.sum()), time.time() - t0, before, after)
