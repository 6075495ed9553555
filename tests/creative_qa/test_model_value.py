"""The model is a value: a scorer owns its bytes and hash, and nothing reopens a path it was handed."""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from creative_qa.batch import batch_score
from creative_qa.onnx_model import ModelBytes, load_model
from creative_qa.scorer import Scorer

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

URI = "models:/creative-qa@champion"


def _register(onnx_path: Path) -> None:
    """``onnx_path`` registered as creative-qa@champion in the test's own embedded store."""
    import onnx
    from mlflow.tracking import MlflowClient

    import mlflow
    from training import tracking

    with mlflow.start_run(experiment_id=tracking.setup("model-value-test")):
        info = mlflow.onnx.log_model(onnx.load(str(onnx_path)), name="onnx", save_as_external_data=False)
    mv = mlflow.register_model(info.model_uri, "creative-qa")
    MlflowClient().set_registered_model_alias("creative-qa", "champion", mv.version)


@pytest.fixture
def registered(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("CREATIVE_QA_HOME", str(tmp_path / "home"))
    # NOTE: where a registry download would land: every folder made there must be gone afterwards.
    downloads = tmp_path / "tmp"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))
    _register(tiny_onnx)
    return downloads


def test_batch_score_with_the_registry_model_scores_every_creative(registered, tiny_data, tiny_onnx, tmp_path):
    folder = tiny_data["test"].parent / "test"
    n = sum(1 for p in folder.rglob("*") if p.is_file())
    summary = batch_score(folder, tmp_path / "scores.parquet", URI, workers=1, progress=False)
    assert (summary.scored, summary.errors, summary.rows) == (n, 0, n)
    table = pd.read_parquet(tmp_path / "scores.parquet")
    assert table["error"].isna().all() and table["quality"].notna().all()
    # the run records the hash of the bytes it scored with: the registered copy of the same file
    meta = (tmp_path / "scores.parquet.parts" / "_run.json").read_text()
    assert ModelBytes.from_file(tiny_onnx).sha256 in meta
    assert list(registered.iterdir()) == []  # the resolver's download folder is gone


def test_a_scorer_holds_its_model_and_a_user_folder_is_never_deleted(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # a user's own folder that happens to carry the resolver's prefix
    mine = Path(tempfile.mkdtemp(prefix="creative-qa-model-"))
    copy = mine / "model.onnx"
    copy.write_bytes(tiny_onnx.read_bytes())
    s = Scorer(copy)
    assert copy.is_file(), "a path the user passed must never be deleted"
    copy.unlink()  # and the scorer does not need it any more
    assert s.model.sha256 == ModelBytes.from_file(tiny_onnx).sha256
    x = np.zeros((1, s.spec.views, s.spec.input_size, s.spec.input_size, 3), np.uint8)
    assert s.run_prepared(x)[1].shape == (1, len(s.tags))
    s.onnx.set_cpu_threads(1)  # a new session, built from the bytes it holds
    assert s.run_prepared(x)[1].shape == (1, len(s.tags))


def test_load_model_from_the_registry_leaves_no_folder_behind(registered, tiny_onnx):
    model = load_model(URI)
    assert model.data == tiny_onnx.read_bytes() and model.source == URI
    assert list(registered.iterdir()) == []
    assert Scorer(model).tags  # a loaded model is accepted as is, no second download


def test_a_folder_is_not_a_model_and_the_error_names_what_it_holds(tiny_onnx, tmp_path):
    import shutil

    from creative_qa.onnx_model import ModelNotFoundError, load_model

    shutil.copyfile(tiny_onnx, tmp_path / "only.onnx")
    with pytest.raises(ModelNotFoundError, match=r"is a folder: name the \.onnx file \(it holds \['only\.onnx'\]\)"):
        load_model(tmp_path)
    assert load_model(tmp_path / "only.onnx").sha256 == load_model(tiny_onnx).sha256
