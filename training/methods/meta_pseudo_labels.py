"""Meta Pseudo Labels (Pham et al. 2021), multi-label, first-order.

A teacher network (trained, not an average) pseudo-labels the unlabeled batch per tag
(hard, at 0.5, on the weak view); the student learns them on the strong view, plus its
labeled loss. After the student's optimiser step, the teacher learns from how that step
changed the student's loss on the labeled batch, ``h = L_old - L_new``: the teacher's
pseudo-labels are reinforced when the student improved (``h > 0``) and discouraged when
it got worse, ``loss_T = h * BCE(teacher(u), pseudo-labels)`` (the REINFORCE form of the
meta-gradient with the old loss as baseline), plus the teacher's own supervised loss.
The teacher has its own optimiser; the EMA of the student is evaluated and exported.
"""

from __future__ import annotations

import copy

import torch

from training.losses import masked_bce, quality_loss, tag_loss
from training.methods.base import register
from training.methods.ema import TeacherMethod


def mpl_teacher_loss(improvement: float, teacher_logits: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
    """``h * BCE(teacher, pseudo-labels)``: minimising it raises their likelihood when ``h > 0``, lowers it when < 0."""
    return improvement * masked_bce(teacher_logits, pseudo)


@register("meta_pseudo_labels")
class MetaPseudoLabels(TeacherMethod):
    uses_unlabeled = True

    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        teacher_lr: float = 1e-3,
        student_label_weight: float = 1.0,
        loss: str = "bce",
        ema_decay: float = 0.99,
        unlabeled_ratio: int = 1,
    ):
        super().__init__(model, quality_weight, ema_decay)
        self.teacher = copy.deepcopy(model).train()
        self.teacher_opt = torch.optim.AdamW(self.teacher.parameters(), lr=teacher_lr, weight_decay=0.01)
        self.student_label_weight, self.loss, self.unlabeled_ratio = student_label_weight, loss, unlabeled_ratio
        self.pending: dict | None = None

    @torch.no_grad()
    def labeled_loss(self, batch) -> float:
        was = self.model.training
        self.model.eval()
        tags, _ = self.model(self.weak(batch["images"]))
        self.model.train(was)
        return float(tag_loss(self.loss, tags, batch["labels"]))

    def train_step(self, batch, unlabeled, step):
        x, y = batch["images"], batch["labels"]
        tags, q = self.model(self.strong(x, batch.get("crop_pool")))
        sup = tag_loss(self.loss, tags, y) + self.quality_weight * quality_loss(q, batch["quality"])
        loss, logs = self.student_label_weight * sup, {"loss_sup": float(sup.detach())}
        if unlabeled is not None:
            u = unlabeled["images"]
            with torch.no_grad():
                pseudo = (torch.sigmoid(self.teacher(self.weak(u))[0]) >= 0.5).float()
            u_tags, _ = self.model(self.strong(u, unlabeled.get("crop_pool")))
            unsup = masked_bce(u_tags, pseudo)
            loss = loss + unsup
            logs["loss_pseudo"] = float(unsup.detach())
            self.pending = {"batch": batch, "u": u, "pseudo": pseudo, "before": self.labeled_loss(batch)}
        return loss, logs

    def after_step(self, step):
        super().after_step(step)
        if self.pending is None:
            return
        p, self.pending = self.pending, None
        h = p["before"] - self.labeled_loss(p["batch"])
        t_tags, t_q = self.teacher(self.strong(p["u"]))
        t_sup_tags, t_sup_q = self.teacher(self.strong(p["batch"]["images"], p["batch"].get("crop_pool")))
        t_loss = mpl_teacher_loss(h, t_tags, p["pseudo"]) + tag_loss(self.loss, t_sup_tags, p["batch"]["labels"])
        t_loss = t_loss + self.quality_weight * quality_loss(t_sup_q, p["batch"]["quality"])
        self.teacher_opt.zero_grad(set_to_none=True)
        t_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.teacher.parameters(), 2.0)
        self.teacher_opt.step()

    def state_dict(self):
        return super().state_dict() | {
            "teacher": self.teacher.state_dict(),
            "teacher_opt": self.teacher_opt.state_dict(),
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])
            self.teacher_opt.load_state_dict(state["teacher_opt"])
