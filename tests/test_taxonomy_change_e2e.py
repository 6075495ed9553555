"""v1 champion -> taxonomy v2 challenger -> promote, through a real `mlflow server` on loopback, at tiny size."""

from __future__ import annotations

import json
import tempfile

import pandas as pd
import pytest

from creative_qa.cli import main as cli
from creative_qa.taxonomy import load_taxonomy
from tests.conftest import TINY_OVERRIDES
from tests.mlflow_server import mlflow_server as run_mlflow_server

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

SUPERVISED = ["method.name=supervised", "method.params={}"]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with run_mlflow_server(tmp_path_factory.mktemp("mlflow-server-taxonomy")) as url:
        yield url


@pytest.fixture(scope="module")
def v2_data(tmp_path_factory):
    """A few creatives labeled in v2: the 'new labels' and a clean v2 test split."""
    from creative_qa.synth import SynthConfig, generate_dataset

    cfg = SynthConfig(size=128, video_frac=0.0)
    out = tmp_path_factory.mktemp("synth-v2")
    return generate_dataset(
        out, n_labeled=16, n_unlabeled=0, n_test=16, seed=4, cfg=cfg, taxonomy=load_taxonomy("v2"), workers=1
    )


def test_v1_to_v2_retrain_register_challenger_and_promote(
    mlflow_server,
    tiny_data,
    v2_data,
    monkeypatch,
    capsys,
    tmp_path,
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    tiny = [*TINY_OVERRIDES, *SUPERVISED, "experiment=taxonomy-e2e"]
    cli(["train", *tiny, f"data.labeled={tiny_data['train_labeled']}", f"output_dir={tmp_path / 'v1'}"])
    v1_run = json.loads(capsys.readouterr().out)["run_id"]
    cli(["export", "--checkpoint", str(tmp_path / "v1" / "last.pt")])
    assert json.loads(capsys.readouterr().out)["registered"] == "models:/creative-qa@champion"

    # The old labels, migrated, plus a few creatives labeled for the new tags.
    migrated = tmp_path / "labels_v2.csv"
    cli(["taxonomy", "migrate", "--mapping", "v1_to_v2", str(tiny_data["train_labeled"]), "-o", str(migrated)])
    capsys.readouterr()
    old = pd.read_csv(migrated)
    old["path"] = [str(tiny_data["train_labeled"].parent / p) for p in old["path"]]
    new = pd.read_csv(v2_data["train_labeled"])
    new["path"] = [str(v2_data["train_labeled"].parent / p) for p in new["path"]]
    labeled = tmp_path / "train_v2.csv"
    pd.concat([old, new]).to_csv(labeled, index=False)

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the parent's checkpoint is downloaded
    cli(
        [
            "train",
            "--from",
            "models:/creative-qa@champion",
            "--taxonomy",
            "v2",
            "--mapping",
            "v1_to_v2",
            *tiny,
            f"data.labeled={labeled}",
            f"data.test={v2_data['test']}",
            f"output_dir={tmp_path / 'v2'}",
            "warm_start.mix=[1,0.5,0]",  # alpha 0 is the warm-started model itself
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert out["challenger"] == {"uri": "models:/creative-qa@challenger", "version": "2"}
    assert not list(scratch.glob("cqa-parent-*"))  # the downloaded parent checkpoint is not left behind
    # the checkpoint pins the alias to the version it resolved to: a resume cannot follow a moved alias
    from training.checkpoint import Checkpoint

    saved = Checkpoint.load(tmp_path / "v2" / "last.pt", mmap=True).config
    assert saved["warm_start"]["parent"] == "models:/creative-qa/1"

    from mlflow.tracking import MlflowClient

    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    client = MlflowClient()
    run = client.get_run(out["run_id"])
    assert run.data.params["parent_model_version"] == "1" and run.data.params["parent_run_id"] == v1_run
    assert run.data.params["taxonomy_version"] == "2" and run.data.tags["taxonomy_change"] == "v1->v2"
    artifacts = {a.path for a in client.list_artifacts(out["run_id"])}
    assert {"taxonomy.yaml", "parent_taxonomy.yaml", "taxonomy_mapping.yaml", "checkpoints"} <= artifacts
    assert "pseudo_labels_motion_blur" in run.data.metrics
    # the weight mix with the best validation mAP is the one kept (ties go to the larger alpha)
    tried = {a: run.data.metrics[f"val_mAP_mix_{a}"] for a in ("1", "0.5", "0")}
    best = max(tried, key=lambda a: (tried[a], float(a)))
    assert run.data.metrics["warm_mix"] == float(best)
    assert run.data.metrics["val_mAP_before_refit"] == pytest.approx(tried[best])  # then the head refit (refit.py)

    # Tolerance 1: whatever the tiny models score, the challenger is promoted and the table printed.
    cli(["promote", "--eval", str(v2_data["test"]), "--tolerance", "1.0"])
    printed = capsys.readouterr().out
    assert "compression_artifacts" in printed and "rename" in printed and "photo_background" in printed
    assert json.loads(printed.strip().splitlines()[-1])["promoted"] is True
    champion = client.get_model_version_by_alias("creative-qa", "champion")
    assert str(champion.version) == "2" and champion.run_id == out["run_id"]

    from creative_qa.scorer import Scorer

    scorer = Scorer("models:/creative-qa@champion")  # what serving loads next
    assert scorer.taxonomy.version == "2" and scorer.tags == load_taxonomy("v2").tag_names
