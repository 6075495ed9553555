"""Noisy Student, multi-label: a frozen teacher pseudo-labels, a noised student learns.

The teacher (a checkpoint of an earlier round) sees the *clean* weak view of each
unlabeled creative and of each labeled creative's blank tags; its probabilities
are the targets, soft (``soft: true``) or hardened at 0.5, and a tag is used only
where the teacher is confident (``|2p - 1| >= confidence``). The student sees the
strong view and trains with dropout and stochastic depth (``model.drop_rate``,
``model.drop_path_rate``): the noise is what lets it outgrow its teacher.

A recipe with ``rounds`` runs them (``NoisyStudent.run``): round 0 trains the first
teacher on labels alone, and each later round trains a student, at least as large as
its teacher (``student_backbone`` can name a bigger timm model), whose result becomes
the next teacher; each round is its own MLflow run, nested under one parent.
"""

from __future__ import annotations

import copy
import logging

import torch

import mlflow
from training.losses import known_mask, masked_bce, quality_loss, tag_loss
from training.methods.base import Method, Stage, register

log = logging.getLogger(__name__)


@register("noisy_student")
class NoisyStudent(Method):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        teacher: str | None = None,
        soft: bool = True,
        confidence: float = 0.5,
        unlabeled_weight: float = 1.0,
        loss: str = "bce",
        unlabeled_ratio: int = 1,
    ):
        super().__init__(model, quality_weight)
        self.teacher_path, self.soft, self.confidence = teacher, soft, confidence
        self.unlabeled_weight, self.loss, self.unlabeled_ratio = unlabeled_weight, loss, unlabeled_ratio
        self.teacher = None
        if teacher:
            from training.model import model_from_checkpoint

            # NOTE: the teacher's passes count in this run, and it pools a video's frames as the student does
            self.teacher = model_from_checkpoint(teacher).share_run(model).to(next(model.parameters()).device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    @classmethod
    def staged(cls, cfg, resume=None):
        """Rounds when the recipe asks for them; one ordinary run otherwise (or when resuming a round)."""
        return "rounds" in cfg.method.params and not resume

    @classmethod
    def stages(cls, cfg, resume=None):
        """Round 0 trains the first teacher on the labels; each later round a student from the last one."""
        if not cls.staged(cfg, resume):
            yield Stage(cfg, resume)
            return
        params = dict(cfg.method.params)
        rounds = int(params.pop("rounds", 2))
        student_backbone = params.pop("student_backbone", None)
        teacher_epochs = params.pop("teacher_epochs", None)
        mlflow.set_tag("rounds", rounds)  # on the parent run train() holds open
        result = None
        for r in range(rounds + 1):
            round_cfg = copy.deepcopy(cfg)
            round_cfg.run_name = f"round-{r}"
            round_cfg.output_dir = f"{cfg.output_dir}/round-{r}" if cfg.output_dir else None
            round_cfg.method.params = dict(params)
            if r == 0:
                round_cfg.method.params.pop("teacher", None)
                if teacher_epochs:
                    round_cfg.optim.epochs = int(teacher_epochs)
            else:
                round_cfg.method.params["teacher"] = str(result.checkpoint)
                if student_backbone:
                    round_cfg.model.backbone = student_backbone
            log.info("noisy student round %d/%d (%s)", r, rounds, "teacher" if r == 0 else "student")
            result = yield Stage(round_cfg)
            mlflow.log_metrics({k: v for k, v in result.metrics.items() if k.endswith("mAP")}, step=r)
        mlflow.set_tag("final_round_run_id", result.run_id)

    @torch.no_grad()
    def _targets(self, images: torch.Tensor) -> torch.Tensor:
        tags, _ = self.teacher(self.weak(images))
        p = torch.sigmoid(tags)
        t = p if self.soft else (p >= 0.5).float()
        return t.masked_fill((2 * p - 1).abs() < self.confidence, float("nan"))

    def train_step(self, batch, unlabeled, step):
        x, y = batch["images"], batch["labels"]
        tags, q = self.model(self.strong(x, batch.get("crop_pool")))
        sup = tag_loss(self.loss, tags, y) + self.quality_weight * quality_loss(q, batch["quality"])
        if self.teacher is None:  # round 0: the first teacher learns from labels alone
            return sup, {"loss_sup": float(sup.detach())}
        blank = 1 - known_mask(y)
        pl = self._targets(x)
        unsup = masked_bce(tags, pl, known_mask(pl) * blank)
        used = float((known_mask(pl) * blank).sum())
        if unlabeled is not None:
            u = unlabeled["images"]
            pu = self._targets(u)
            u_tags, _ = self.model(self.strong(u, unlabeled.get("crop_pool")))
            unsup = unsup + masked_bce(u_tags, pu)
            used += float(known_mask(pu).sum())
        loss = sup + self.unlabeled_weight * unsup
        return loss, {"loss_sup": float(sup.detach()), "loss_unsup": float(unsup.detach()), "pseudo_labels": used}
