"""Noisy Student rounds: teacher -> pseudo-labels -> noised student -> next teacher.

Round 0 trains the first teacher on the labels (the ``noisy_student`` method
without a teacher); every later round trains a student, at least as large as its
teacher (``method.params.student_backbone`` can name a bigger timm model), on the
labels plus the teacher's pseudo-labels. Each round is its own MLflow run, nested
under one parent run; the last student is the result.
"""

from __future__ import annotations

import copy
import logging

import mlflow
from training import tracking
from training.config import TrainConfig
from training.loop import TrainResult, train

log = logging.getLogger(__name__)


def noisy_student(cfg: TrainConfig) -> TrainResult:
    params = dict(cfg.method.params)
    rounds = int(params.pop("rounds", 2))
    student_backbone = params.pop("student_backbone", None)
    teacher_epochs = params.pop("teacher_epochs", None)
    exp_id = tracking.setup(cfg.experiment)
    with mlflow.start_run(
        experiment_id=exp_id, run_name=cfg.run_name or "noisy-student", nested=mlflow.active_run() is not None
    ) as parent:
        mlflow.set_tags({"method": "noisy_student", "rounds": rounds})
        result: TrainResult | None = None
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
            result = train(round_cfg)
            mlflow.log_metrics({k: v for k, v in result.metrics.items() if k.endswith("mAP")}, step=r)
        assert result is not None
        mlflow.set_tag("final_round_run_id", result.run_id)
        log.info("noisy student done: parent run %s, final student %s", parent.info.run_id, result.run_id)
        return result
