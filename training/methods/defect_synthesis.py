"""Mean Teacher plus defect synthesis: the unlabeled pool becomes labeled defect examples.

Each step, every creative of the unlabeled batch (the labeled batch when there is no
pool) gets one degraded copy from ``training.degrade``: one defect clearly over its
threshold, so that tag is a known 1 and the copy's other tags stay unknown. The student
learns the copies' known tags (masked BCE, so nothing else is claimed) and a ranking
term: the copy's quality must score below its source's (RankIQA's idea, on the quality
head). That is on top of Mean Teacher's consistency, which keeps working on the
original creatives. Rare defect tags, whose noisy labels give a handful of positives,
get a steady stream of true ones.
"""

from __future__ import annotations

import torch

from creative_qa.taxonomy import load_taxonomy
from training.degrade import ranking_loss, synthesised_tags, synthesize
from training.losses import masked_bce
from training.methods.base import register
from training.methods.mean_teacher import MeanTeacher


@register("defect_synthesis")
class DefectSynthesis(MeanTeacher):
    def __init__(
        self,
        model,
        quality_weight: float = 1.0,
        synth_weight: float = 1.0,
        rank_weight: float = 0.5,
        synth_share: float = 0.5,
        **mean_teacher,
    ):
        super().__init__(model, quality_weight, **mean_teacher)
        self.synth_weight, self.rank_weight, self.synth_share = synth_weight, rank_weight, synth_share
        self.generator = torch.Generator().manual_seed(1234)

    def train_step(self, batch, unlabeled, step):
        loss, logs = super().train_step(batch, unlabeled, step)
        src = unlabeled if unlabeled is not None else batch
        x = src["images"][: max(1, int(round(len(src["images"]) * self.synth_share)))]
        detail = self.spec.detail_side if self.spec is not None else 0
        grid = bool(self.spec is not None and self.spec.grid_view)
        profile = bool(grid and self.spec.grid_profile)
        tags = self.tags or load_taxonomy().tag_names
        degraded, labels = synthesize(x, tags, detail, self.generator, grid_view=grid, grid_profile=profile)
        # NOTE: no crop pool here: the pool's windows are of the undegraded creative.
        tags_d, q_d = self.model(self.strong(degraded))
        _, q_s = self.model(self.strong(x))
        synth = masked_bce(tags_d, labels.to(tags_d.device))
        rank = ranking_loss(q_s, q_d)
        loss = loss + self.synth_weight * synth + self.rank_weight * rank
        return loss, logs | {"loss_synth": float(synth.detach()), "loss_rank": float(rank.detach())}

    def taught_tags(self) -> list[str]:
        """The defects it synthesises: each copy's tag is a known 1 the labels never gave."""
        return synthesised_tags(
            self.tags or load_taxonomy().tag_names, bool(self.spec is not None and self.spec.grid_view)
        )

    def state_dict(self):
        return super().state_dict() | {"synth_rng": self.generator.get_state()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "synth_rng" in state:
            self.generator.set_state(state["synth_rng"])
