"""Predict over a dataset's views: the one loop every part that scores cached views uses (evaluation, the
warm start's parent, CAP's pool ranking, DivideMix's per-sample losses)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def forward_views(
    model: nn.Module, views: torch.Tensor, device: torch.device, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model``'s raw outputs over ``views`` (uint8 ``(N, V, S, S, 3)``) in batches, in eval mode (its mode is
    restored after): tag logits ``(N, T)`` and quality logits ``(N,)``, float32 on the CPU."""
    was_training = model.training
    model.eval()
    tags, quality = [], []
    try:
        for i in range(0, len(views), batch_size):
            t, q = model(views[i : i + batch_size].to(device))
            tags.append(t.float().cpu())
            quality.append(q.float().cpu())
    finally:
        model.train(was_training)
    if not tags:
        return torch.zeros((0, 0)), torch.zeros(0)
    return torch.cat(tags), torch.cat(quality)
