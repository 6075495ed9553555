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


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_recipe_trains_a_couple_of_steps(recipe, tiny_data, capsys, tmp_path):
    cli(
        [
            "train",
            "--recipe",
            recipe,
            *TINY_OVERRIDES,
            "optim.steps_per_epoch=2",
            f"data.labeled={tiny_data['train_labeled']}",
            f"data.unlabeled={tiny_data['unlabeled']}",
            f"output_dir={tmp_path}",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    ckpt = Path(out["checkpoint"])
    assert ckpt.is_file() and tmp_path in ckpt.parents and out["run_id"]


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
    assert ckpt["epoch"] == 0 and ckpt["step"] == 2
    resumed = train(load_config("default", [*base, "optim.epochs=2"]), resume=first.checkpoint)
    assert resumed.run_id == first.run_id
    after = load_checkpoint(resumed.checkpoint)
    assert after["epoch"] == 1 and after["step"] == 4
    tracking.setup("creative-qa")
    history = MlflowClient().get_metric_history(first.run_id, "epoch")
    assert sorted(m.value for m in history) == [1.0, 2.0, 2.0] or sorted(m.value for m in history)[-1] == 2.0
    assert mlflow.active_run() is None
