"""synth -> train -> export -> registry -> Scorer -> API, through a real `mlflow server` on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from creative_qa.cli import main as cli
from tests.conftest import TINY_OVERRIDES
from tests.mlflow_server import mlflow_server as serve_mlflow

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with serve_mlflow(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


def test_synth_train_export_register_score_serve(mlflow_server, tiny_data, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    cli(
        [
            "train",
            *TINY_OVERRIDES,
            "optim.epochs=2",
            f"data.labeled={tiny_data['train_labeled']}",
            f"data.test={tiny_data['test']}",
            f"output_dir={tmp_path / 'run'}",
            "experiment=e2e",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    run_id, ckpt = out["run_id"], out["checkpoint"]
    assert Path(ckpt).is_file()

    cli(["export", "--checkpoint", ckpt, "--parity", str(tiny_data["test"])])
    exported = json.loads(capsys.readouterr().out)
    assert exported["parity_max_abs_diff"] < 1e-4
    assert exported["registered"] == "models:/creative-qa@champion"

    from mlflow.tracking import MlflowClient

    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "val_mAP" in run.data.metrics and "test_mAP" in run.data.metrics
    assert run.data.params["model.backbone"] == "test_resnet"
    # one per epoch, then the model with its refitted tag head (training.refit), at the last step
    logged = sorted(client.get_metric_history(run_id, "val_mAP"), key=lambda m: (m.step, m.timestamp))
    history = [m.value for m in logged]
    assert len(history) == 3 and run.data.metrics["val_mAP_before_refit"] == history[1]
    assert run.data.metrics["val_mAP"] == history[2]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "taxonomy.yaml", "thresholds.json", "checkpoints"} <= artifacts
    mv = client.get_model_version_by_alias("creative-qa", "champion")
    assert mv.run_id == run_id and mv.version == exported["version"]

    from creative_qa.scorer import Scorer

    scorer = Scorer("models:/creative-qa@champion")
    assert scorer.version == mv.version
    test = pd.read_csv(tiny_data["test"])
    path = tiny_data["test"].parent / test["path"].iloc[0]
    direct = scorer.score_file(path)

    from fastapi.testclient import TestClient

    from serving.main import create_app
    from serving.settings import Settings

    with TestClient(create_app(Settings(model="models:/creative-qa@champion"))) as c:
        r = c.post("/v1/score", files={"file": (path.name, path.read_bytes(), "image/png")})
        assert r.status_code == 200
        assert r.json() == direct
        assert c.get("/v1/model").json()["version"] == mv.version

    cli(["score", str(path), "--model", "models:/creative-qa@champion"])
    assert json.loads(capsys.readouterr().out)["quality"] == direct["quality"]
