"""CoMatch (Li et al. 2021), multi-label: graph-smoothed pseudo-labels and a contrastive term whose
positives are creatives with matching pseudo-labels.

A projection head maps the student's features to unit embeddings. A memory bank keeps the
embeddings (weak view) and pseudo-labels of recent unlabeled creatives. Each creative's
pseudo-label is the teacher's (EMA, weak view) per-tag probability smoothed over its
nearest memories: ``q = alpha p + (1 - alpha) sum_k softmax_k(z . z_k / tau) q_k``.
The pseudo-label graph is multi-label: two creatives are related by the cosine similarity
of their tag-probability vectors (not by a shared class), thresholded at ``graph_threshold``
and row-normalised; the contrastive term makes the embedding similarity distribution of two
strong views match that graph. Tags learn the smoothed pseudo-labels where confident.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.losses import known_mask, masked_bce, quality_loss, tag_loss
from training.methods.base import register
from training.methods.ema import TeacherMethod


def smooth_pseudo_labels(
    probs: torch.Tensor, emb: torch.Tensor, mem_emb: torch.Tensor, mem_probs: torch.Tensor, alpha: float, tau: float
) -> torch.Tensor:
    """``alpha p + (1 - alpha) softmax(emb . mem_emb / tau) @ mem_probs`` (no memory: ``p``)."""
    if len(mem_emb) == 0:
        return probs
    w = torch.softmax(emb @ mem_emb.T / tau, dim=1)
    return alpha * probs + (1 - alpha) * w @ mem_probs


def label_graph(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Row-normalised graph of multi-label similarity: cosine of tag-probability vectors, self-loops kept."""
    p = F.normalize(probs, dim=1)
    g = p @ p.T
    g = g * (g >= threshold).float()
    g.fill_diagonal_(1.0)
    return g / g.sum(1, keepdim=True)


def graph_contrastive_loss(e1: torch.Tensor, e2: torch.Tensor, graph: torch.Tensor, tau: float) -> torch.Tensor:
    """Cross-entropy between the graph and the softmax of embedding similarities (two views, both ways)."""
    logits = e1 @ e2.T / tau
    return -(graph * F.log_softmax(logits, dim=1)).sum(1).mean()


@register("comatch")
class CoMatch(TeacherMethod):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        embed_dim: int = 64,
        memory: int = 1024,
        alpha: float = 0.9,
        tau: float = 0.2,
        graph_threshold: float = 0.8,
        confidence: float = 0.8,
        contrastive_weight: float = 1.0,
        unlabeled_weight: float = 1.0,
        loss: str = "bce",
        ema_decay: float = 0.99,
        unlabeled_ratio: int = 1,
    ):
        super().__init__(model, quality_weight, ema_decay)
        dim = model.tag_head.in_features
        device = model.tag_head.weight.device
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, embed_dim)).to(device)
        self.memory, self.alpha, self.tau, self.graph_threshold = memory, alpha, tau, graph_threshold
        self.confidence, self.contrastive_weight, self.unlabeled_weight = (
            confidence,
            contrastive_weight,
            unlabeled_weight,
        )
        self.loss, self.unlabeled_ratio = loss, unlabeled_ratio
        self.mem_emb = torch.zeros(0, embed_dim)
        self.mem_probs = torch.zeros(0, model.tag_head.out_features)

    def extra_parameters(self):
        return list(self.proj.parameters())

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(f), dim=1)

    def train_step(self, batch, unlabeled, step):
        x, y = batch["images"], batch["labels"]
        tags, q = self.model(self.strong(x, batch.get("crop_pool")))
        sup = tag_loss(self.loss, tags, y) + self.quality_weight * quality_loss(q, batch["quality"])
        logs = {"loss_sup": float(sup.detach())}
        if unlabeled is None:
            return sup, logs
        u, pool = unlabeled["images"], unlabeled.get("crop_pool")
        with torch.no_grad():
            p, _ = self.ema.probs(self.weak(u))
            e_w = self.embed(self.model.features(self.weak(u)))
            mem_e, mem_p = self.mem_emb.to(u.device), self.mem_probs.to(u.device)
            q_smooth = smooth_pseudo_labels(p, e_w, mem_e, mem_p, self.alpha, self.tau)
            graph = label_graph(q_smooth, self.graph_threshold)
            self.mem_emb = torch.cat([e_w.cpu(), self.mem_emb])[: self.memory]
            self.mem_probs = torch.cat([q_smooth.cpu(), self.mem_probs])[: self.memory]
        f1 = self.model.features(self.strong(u, pool))
        f2 = self.model.features(self.strong(u, pool))
        u_tags, _ = self.model.heads(f1)
        confident = (torch.maximum(q_smooth, 1 - q_smooth) >= self.confidence).float()
        hard = (q_smooth >= 0.5).float()
        unsup = masked_bce(u_tags, hard, confident)
        contrast = graph_contrastive_loss(self.embed(f1), self.embed(f2), graph, self.tau)
        loss = sup + self.unlabeled_weight * unsup + self.contrastive_weight * contrast
        blank = 1 - known_mask(y)
        if blank.any():
            with torch.no_grad():
                pb, _ = self.ema.probs(self.weak(x))
            conf_b = (torch.maximum(pb, 1 - pb) >= self.confidence).float() * blank
            loss = loss + self.unlabeled_weight * masked_bce(tags, (pb >= 0.5).float(), conf_b)
        return loss, logs | {"loss_unsup": float(unsup.detach()), "loss_contrast": float(contrast.detach())}

    def state_dict(self):
        return super().state_dict() | {"proj": self.proj.state_dict(), "memory": (self.mem_emb, self.mem_probs)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "proj" in state:
            self.proj.load_state_dict(state["proj"])
            self.mem_emb, self.mem_probs = state["memory"]
