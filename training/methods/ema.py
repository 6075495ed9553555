"""An exponential-moving-average copy of a network (the Mean Teacher), shared by the SSL methods."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from training.losses import consistency_loss
from training.methods.base import Method


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.99, warmup: float = 1.0):
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # NOTE: a short warm-up so the teacher is not stuck at init: (1 + t) / (1 + warmup + t) reaches
        # 0.99 after 99 * warmup steps, well inside a CPU run.
        d = min(self.decay, (1 + step) / (1 + self.warmup + step))
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.mul_(d).add_(p.detach(), alpha=1 - d)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tags, q = self.model(images)
        return torch.sigmoid(tags), torch.sigmoid(q)


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(-5 (1 - t)^2), the usual consistency ramp-up (Laine & Aila 2017)."""
    if length <= 0:
        return 1.0
    t = min(1.0, step / length)
    return float(torch.exp(torch.tensor(-5.0 * (1.0 - t) ** 2)))


class TeacherMethod(Method):
    """A method that keeps an EMA teacher: updated after every step, evaluated and exported,
    checkpointed with the method."""

    def __init__(
        self,
        model: nn.Module,
        quality_weight: float = 1.0,
        ema_decay: float = 0.99,
        consistency_kind: str = "mse",
        quality_consistency: float = 0.0,
        doubtful: str | None = None,
        doubtful_top: int = 0,
    ):
        super().__init__(model, quality_weight)
        self.ema = EMA(model, ema_decay)
        self.consistency_kind, self.quality_consistency = consistency_kind, quality_consistency
        # doubtful labels: the top ``doubtful_top`` of a `creative-qa label-issues` CSV, blanked for training
        self.doubtful, self.doubtful_top = doubtful, doubtful_top
        self.blanked: torch.Tensor | None = None  # (N_labeled, T) bool

    def on_epoch_start(self, epoch, labeled, device, unlabeled=None) -> dict[str, float]:
        if self.doubtful and self.blanked is None:
            self.blanked = doubtful_mask(Path(self.doubtful), labeled.paths, self.tags, self.doubtful_top)
            return {"doubtful_blanked": float(self.blanked.sum())}
        return {}

    def given_labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's labels with its doubtful ones blank (as given, without a ``doubtful`` CSV)."""
        y = batch["labels"]
        if self.blanked is None:
            return y
        return y.masked_fill(self.blanked.to(y.device)[batch["index"]], float("nan"))

    def unlabeled_consistency(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Student on the strong view vs teacher on the weak view, every tag of unlabeled creatives, and their
        quality (weighted by ``quality_consistency``: the teacher's quality is a target too)."""
        t_tags, t_q = self.ema.probs(self.weak(batch["images"]))
        student, s_q = self.model(self.strong(batch["images"], batch.get("crop_pool")))
        loss = consistency_loss(student, t_tags, kind=self.consistency_kind)
        if self.quality_consistency:
            loss = loss + self.quality_consistency * ((torch.sigmoid(s_q) - t_q.detach()) ** 2).mean()
        return loss

    def after_step(self, step: int) -> None:
        self.ema.update(self.model, step)

    def eval_model(self) -> nn.Module:
        return self.ema.model

    def state_dict(self) -> dict:
        return {"ema": self.ema.model.state_dict(), "blanked": self.blanked}

    def load_state_dict(self, state: dict) -> None:
        if "ema" in state:
            self.ema.model.load_state_dict(state["ema"])
        self.blanked = state.get("blanked")


def doubtful_mask(csv: Path, paths: list[str], tags: list[str], top: int) -> torch.Tensor:
    """The ``top`` highest-scored labels of a label-issues CSV as a ``(N, T)`` mask over the labeled set."""
    issues = pd.read_csv(csv).sort_values("score", ascending=False).head(top)
    row = {p: i for i, p in enumerate(paths)} | {Path(p).name: i for i, p in enumerate(paths)}
    mask = torch.zeros(len(paths), len(tags), dtype=torch.bool)
    for path, tag in zip(issues["path"], issues["tag"], strict=True):
        i = row.get(path, row.get(Path(str(path)).name))
        if i is not None and tag in tags:
            mask[i, tags.index(tag)] = True
    return mask
