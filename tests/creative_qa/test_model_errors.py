"""A new user scoring before any model exists gets what is missing and the command that fixes it."""

import os
import subprocess
import sys

import pytest

from creative_qa.scorer import ModelNotFoundError, Scorer

FIXES = ("creative-qa demo", "creative-qa export", "--model")


def test_scorer_without_a_registered_model_says_how_to_get_one(fresh_home):
    with pytest.raises(ModelNotFoundError) as e:
        Scorer("models:/creative-qa@champion")
    msg = str(e.value)
    assert "models:/creative-qa@champion" in msg and "mlflow.db" in msg
    assert "nothing is registered yet (no MLflow store at" in msg
    assert not (fresh_home / "mlflow.db").exists()  # looking did not create an empty store
    assert all(f in msg for f in FIXES)


def test_scorer_with_a_missing_file_says_how_to_get_one(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model file not found") as e:
        Scorer(tmp_path / "nope.onnx")
    assert all(f in str(e.value) for f in FIXES)


def test_cli_score_before_any_model_is_registered_ends_without_a_traceback(tmp_path):
    img = tmp_path / "ad.png"
    img.write_bytes(b"\x89PNG")
    env = {**os.environ, "CREATIVE_QA_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("CREATIVE_QA_MODEL", None)
    r = subprocess.run(
        [sys.executable, "-m", "creative_qa.cli", "score", str(img)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("creative-qa score: no model at models:/creative-qa@champion")
    assert all(f in r.stderr for f in FIXES)


def test_an_existing_store_without_the_model_is_reported_too(fresh_home, tmp_path, monkeypatch):
    import tempfile

    from mlflow.tracking import MlflowClient

    from creative_qa.paths import tracking_uri

    MlflowClient(tracking_uri()).search_registered_models()  # creates the (empty) store
    assert (fresh_home / "mlflow.db").is_file()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the download folder would be made
    with pytest.raises(ModelNotFoundError) as e:
        Scorer("models:/creative-qa@champion")
    assert "Registered Model with name=creative-qa not found" in str(e.value)
    assert all(f in str(e.value) for f in FIXES)
    assert list(tmp_path.iterdir()) == []  # the failed download left no folder behind
