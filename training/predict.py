"""Predict over a dataset's views: the one loop every part that scores cached views uses (evaluation, the
warm start's parent, CAP's pool ranking, DivideMix's per-sample losses)."""

from __future__ import annotations

import torch
from torch import nn


def _in_batches(model: nn.Module, views, device: torch.device, batch_size: int, call) -> list:
    """``call(model, batch)`` over ``views`` (uint8 ``(N, V, S, S, 3)``: a tensor, an array or a ``ViewStore``) in
    batches, in eval mode without gradients (its mode is restored after)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            starts = range(0, len(views), batch_size)
            return [call(model, torch.as_tensor(views[i : i + batch_size]).to(device)) for i in starts]
    finally:
        model.train(was_training)


def forward_views(
    model: nn.Module, views: torch.Tensor, device: torch.device, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model``'s raw outputs over ``views`` (uint8 ``(N, V, S, S, 3)``) in batches, in eval mode (its mode is
    restored after): tag logits ``(N, T)`` and quality logits ``(N,)``, float32 on the CPU."""
    out = _in_batches(model, views, device, batch_size, lambda m, x: [y.float().cpu() for y in m(x)])
    if not out:
        return torch.zeros((0, 0)), torch.zeros(0)
    return torch.cat([t for t, _ in out]), torch.cat([q for _, q in out])


def head_features(model: nn.Module, views, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """The heads' input (``model.features``) over ``views`` in batches, in eval mode: ``(N, F)`` float32 on the CPU."""
    out = _in_batches(model, views, device, batch_size, lambda m, x: m.features(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.tag_head.in_features)
