"""Self-supervised pretraining on the whole pool, then semi-supervised fine-tuning (SimCLRv2's recipe).

Stage 1 (this method's ``train_step``) learns the backbone without a label: a contrastive
(NT-Xent) loss over detail windows, where the two positives of a creative are two
*different* detail windows of it (its served crops plus its ``crop_pool``), each flipped
and rotated by 90 degrees independently, and every other window in the batch is a
negative. SimCLR's colour jitter and blur are left out on purpose: they would teach the
backbone to ignore exactly the defects it must see. Two windows of one creative share
every degradation (defects are defined over the whole creative, DESIGN.md), so what the
pair has in common, and what tells creatives apart, is their degradations, texture and
palette: the idea CONTRIQUE and Re-IQA use for image quality. Labeled creatives join the
pool batch as more unlabeled windows; no label is read.

Stage 2 fine-tunes the pretrained backbone with the recipe's ``finetune`` method and its
``finetune_params`` (defect synthesis on the pool by default): fresh heads, the backbone
loaded from the file stage 1 writes (``model.weights``, the same route a user's own
weights file takes). The epochs of the recipe are shared between the stages
(``pretrain_share``), so pretraining counts in the run's budget.

``run`` drives both stages as nested MLflow runs under one parent. ``--resume`` with a
stage's checkpoint resumes that stage (and runs stage 2 after a resumed stage 1).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import mlflow
from training.augment import detail_windows, flip_rotate
from training.checkpoint import Checkpoint
from training.methods.base import Method, Stage, register
from training.model import config_of

log = logging.getLogger(__name__)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: ``z1[i]`` and ``z2[i]`` (L2-normalised) are positives, all other rows negatives."""
    z = torch.cat([z1, z2])  # (2N, E)
    n = len(z1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def window_pairs(
    images: torch.Tensor, pool: torch.Tensor | None, generator: torch.Generator | None = None, native: int = 0
):
    """Two different detail windows per creative, each flipped and rotated on its own: ``(N, 1, S, S, 3)`` x 2.

    ``images`` ``(N, V, S, S, 3)`` (view 0, the whole creative, is not a window), ``pool``
    ``(N, P, S, S, 3)`` further windows; the ``native`` last views are not among them. A creative with one
    window in all pairs it with itself (the flips and rotations still differ).
    """
    cands = detail_windows(images, pool, native)
    if cands.shape[1] == 0:
        cands = images[:, :1]
    order = torch.rand(cands.shape[:2], generator=generator).argsort(dim=1).to(images.device)
    first, second = order[:, 0], order[:, min(1, cands.shape[1] - 1)]
    rows = torch.arange(len(cands), device=images.device)
    return flip_rotate(cands[rows, first][:, None], generator), flip_rotate(cands[rows, second][:, None], generator)


@register("contrastive_pretrain")
class ContrastivePretrain(Method):
    uses_unlabeled = True
    label_free = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        temperature: float = 0.2,
        proj_dim: int = 64,
        unlabeled_ratio: int = 1,
        pretrain_share: float = 0.3,
        finetune: str = "defect_synthesis",
        finetune_params: dict | None = None,
    ):
        super().__init__(model, quality_weight)
        del pretrain_share, finetune, finetune_params  # read by run(); accepted here so one recipe drives both
        dim = model.backbone.num_features
        device = model.tag_head.weight.device
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, proj_dim)).to(device)
        self.temperature, self.unlabeled_ratio = temperature, unlabeled_ratio

    def extra_parameters(self):
        return list(self.proj.parameters())

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.model.features(windows)), dim=1)

    def train_step(self, batch, unlabeled, step):
        srcs = [batch] + ([unlabeled] if unlabeled is not None else [])
        x = torch.cat([s["images"] for s in srcs])
        pools = [s.get("crop_pool") for s in srcs]
        pool = torch.cat(pools) if all(p is not None for p in pools) else None
        a, b = window_pairs(x, pool, native=self.native_views)
        loss = nt_xent(self.embed(a), self.embed(b), self.temperature)
        return loss, {"loss_contrast": float(loss.detach())}

    def state_dict(self):
        return {"proj": self.proj.state_dict()}

    def load_state_dict(self, state):
        if "proj" in state:
            self.proj.load_state_dict(state["proj"])

    @classmethod
    def staged(cls, cfg, resume=None):
        """Two stages, except when resuming a stage-2 checkpoint (the fine-tuning alone)."""
        return not resume or _checkpoint_config(resume).method.name == cls.name

    @classmethod
    def stages(cls, cfg, resume=None):
        """Stage 1 (pretraining) then stage 2 (the ``finetune`` method)."""
        if not cls.staged(cfg, resume):
            yield Stage(_checkpoint_config(resume), resume)
            return
        params = dict(cfg.method.params)
        share = float(params.get("pretrain_share", 0.3))
        if not 0 < share < 1:
            raise ValueError(f"pretrain_share must be in (0, 1), got {share}")
        epochs, spe = cfg.optim.epochs, cfg.optim.steps_per_epoch
        pre_spe = fine_spe = spe
        if epochs >= 2:  # the stages share the epochs
            pre_epochs = min(max(1, round(epochs * share)), epochs - 1)
            fine_epochs = epochs - pre_epochs
        elif spe and spe >= 2:  # one epoch of N steps: the stages share the steps
            pre_epochs = fine_epochs = 1
            pre_spe = min(max(1, round(spe * share)), spe - 1)
            fine_spe = spe - pre_spe
        else:  # nothing to share: one epoch each (twice the budget asked for)
            log.warning("contrastive_pretrain: %d epoch(s) cannot be shared by two stages; running one each", epochs)
            pre_epochs = fine_epochs = 1
        mlflow.set_tag("stages", "pretrain,finetune")  # on the parent run train() holds open
        pre = copy.deepcopy(cfg)
        pre.run_name = "pretrain"
        pre.optim.epochs, pre.optim.steps_per_epoch = pre_epochs, pre_spe
        pre.output_dir = f"{cfg.output_dir}/pretrain" if cfg.output_dir else None
        log.info("stage 1/2: contrastive pretraining, %d epoch(s) of the run's %d", pre_epochs, epochs)
        stage1 = yield Stage(pre, resume)
        weights = Path(stage1.checkpoint).with_name("backbone.pth")
        state = Checkpoint.load(stage1.checkpoint).model
        torch.save({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, weights)
        fine = copy.deepcopy(cfg)
        fine.run_name = "finetune"
        fine.optim.epochs, fine.optim.steps_per_epoch = fine_epochs, fine_spe
        fine.output_dir = f"{cfg.output_dir}/finetune" if cfg.output_dir else None
        fine.model.weights = str(weights)
        fine.model.pretrained = False
        fine.method.name = str(params.get("finetune", "defect_synthesis"))
        fine.method.params = dict(params.get("finetune_params") or {})
        log.info("stage 2/2: %s from the pretrained backbone, %d epochs", fine.method.name, fine.optim.epochs)
        result = yield Stage(fine)
        mlflow.log_metrics({k: v for k, v in result.metrics.items() if k.endswith("mAP")})
        mlflow.set_tags({"pretrain_run_id": stage1.run_id, "finetune_run_id": result.run_id})


def _checkpoint_config(path):
    """The ``TrainConfig`` a checkpoint was trained with."""
    return config_of(Checkpoint.load(path, mmap=True))
