"""Training through the CLI: every recipe runs, corrupt rows are skipped, a killed run resumes."""

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import mlflow
from creative_qa.cli import main as cli
from tests.conftest import TINY_OVERRIDES
from training import tracking
from training.config import list_recipes, load_config
from training.loop import load_checkpoint, train

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

# Recipes whose method runs stages, each an MLflow run under the recipe's own: per stage, its method and
# its steps (1 epoch of 2 steps asked for: contrastive pretraining shares them, each Noisy Student round
# trains them).
STAGES = {
    "contrastive_pretrain": {"pretrain": ("contrastive_pretrain", 1), "finetune": ("defect_synthesis", 1)},
    "noisy_student": {"round-0": ("noisy_student", 2), "round-1": ("noisy_student", 2)},
}


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_recipe_trains_a_couple_of_steps(recipe, tiny_data, capsys, tmp_path):
    overrides = [
        *TINY_OVERRIDES,
        "optim.steps_per_epoch=2",
        f"data.labeled={tiny_data['train_labeled']}",
        f"data.unlabeled={tiny_data['unlabeled']}",
        f"output_dir={tmp_path}",
    ]
    cli(["train", "--recipe", recipe, *overrides])
    out = json.loads(capsys.readouterr().out)
    ckpt = Path(out["checkpoint"])
    assert ckpt.is_file() and tmp_path in ckpt.parents and out["run_id"]

    # The recipe's method ran, with the recipe's parameters, for the steps asked: not some other recipe.
    want = load_config(recipe, overrides)
    client = MlflowClient()
    run = client.get_run(out["run_id"])
    parent_id = run.data.tags.get("mlflow.parentRunId")
    if recipe not in STAGES:
        assert parent_id is None, f"{recipe} ran in stages: add it to STAGES"
        saved = load_checkpoint(ckpt)
        assert saved.config == want.to_dict()
        assert (saved.step, saved.epoch, saved.epoch_done) == (2, 0, True)
        assert run.data.tags["method"] == want.method.name
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "epoch")] == [(2, 1.0)]
        return
    parent = client.get_run(parent_id)
    assert parent.data.tags["method"] == want.method.name
    stages = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    ran = {
        r.info.run_name: (r.data.params["method.name"], client.get_metric_history(r.info.run_id, "epoch")[-1].step)
        for r in stages
    }
    assert ran == STAGES[recipe]


def test_corrupt_and_missing_files_are_skipped_and_counted(tiny_data, tmp_path):
    df = pd.read_csv(tiny_data["train_labeled"])
    (tmp_path / "bad.png").write_bytes(b"garbage")
    df["path"] = [str(tiny_data["train_labeled"].parent / p) for p in df["path"]]
    extra = pd.DataFrame(
        [
            {**df.iloc[0].to_dict(), "path": str(tmp_path / "bad.png")},
            {**df.iloc[0].to_dict(), "path": str(tmp_path / "missing.png")},
        ]
    )
    manifest = tmp_path / "labels.csv"
    pd.concat([df, extra]).to_csv(manifest, index=False)
    cfg = load_config(
        "default",
        [*TINY_OVERRIDES, "optim.steps_per_epoch=1", f"data.labeled={manifest}", f"output_dir={tmp_path / 'run'}"],
    )
    result = train(cfg)
    assert {p for p, _ in result.skipped} == {str(tmp_path / "bad.png"), str(tmp_path / "missing.png")}
    tracking.setup(cfg.experiment)
    run = MlflowClient().get_run(result.run_id)
    assert run.data.metrics["skipped_files"] == 2


def test_resume_continues_the_same_run(tiny_data, tmp_path):
    base = [
        *TINY_OVERRIDES,
        "optim.steps_per_epoch=2",
        f"data.labeled={tiny_data['train_labeled']}",
        f"output_dir={tmp_path}",
    ]
    first = train(load_config("default", base))  # "killed" after epoch 1 of 2
    ckpt = load_checkpoint(first.checkpoint)
    assert ckpt.epoch == 0 and ckpt.step == 2 and ckpt.epoch_done
    resumed = train(load_config("default", [*base, "optim.epochs=2"]), resume=first.checkpoint)
    assert resumed.run_id == first.run_id
    after = load_checkpoint(resumed.checkpoint)
    assert after.epoch == 1 and after.step == 4
    tracking.setup("creative-qa")
    history = MlflowClient().get_metric_history(first.run_id, "epoch")
    # epoch 1 logged by the first process at step 2, epoch 2 by the resumed one at step 4: nothing twice
    assert sorted((m.step, m.value) for m in history) == [(2, 1.0), (4, 2.0)]
    assert mlflow.active_run() is None


THROWAWAY_METHOD = """
from pathlib import Path

from training.losses import masked_bce, quality_loss
from training.methods.base import Method, register


@register("throwaway")
class Throwaway(Method):
    def __init__(self, model, quality_weight=1.0, marker=None):
        super().__init__(model, quality_weight)
        self.marker = Path(marker)

    def train_step(self, batch, unlabeled, step):
        with self.marker.open("a") as f:
            f.write(f"{step} {tuple(batch['images'].shape)}\\n")
        tags, q = self.model(batch["images"])
        return masked_bce(tags, batch["labels"]) + quality_loss(q, batch["quality"]), {}
"""


def test_a_method_is_one_file(tiny_data, capsys, tmp_path):
    """A method from a file alone, named by path in the config, trains two steps through the CLI."""
    path = tmp_path / "my_method.py"
    path.write_text(THROWAWAY_METHOD)
    marker = tmp_path / "steps.txt"
    cli(
        [
            "train",
            *TINY_OVERRIDES,
            f"method.name={path}",
            f"method.params={{marker: {marker}}}",
            "optim.steps_per_epoch=2",
            f"data.labeled={tiny_data['train_labeled']}",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert Path(out["checkpoint"]).is_file()
    steps = marker.read_text().splitlines()
    assert [line.split()[0] for line in steps] == ["0", "1"]
    assert steps[0].endswith("(16, 4, 64, 64, 3)")  # batch 16, whole view + 2 crops of 64 px + the grid view
