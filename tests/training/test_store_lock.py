"""Several runs started together on an empty home must not race MLflow's migration of the embedded store."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import mlflow

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

SNIPPET = """
import sys
from training import tracking
import mlflow
exp = tracking.setup("creative-qa")
with mlflow.start_run(experiment_id=exp) as run:
    mlflow.log_metric("x", 1.0)
print(run.info.run_id)
"""


def test_concurrent_first_runs_on_an_empty_home(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"CREATIVE_QA_HOME": str(home), "PYTHONPATH": str(Path(__file__).parents[2])}
    procs = [
        subprocess.Popen([sys.executable, "-c", SNIPPET], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    errors = [err.decode()[-2000:] for p, (_, err) in zip(procs, outs, strict=True) if p.returncode != 0]
    assert errors == []
    run_ids = {out.decode().split()[-1] for out, _ in outs}
    assert len(run_ids) == 4
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    exps = MlflowClient().search_experiments()
    assert [e.name for e in exps if e.name == "creative-qa"] == ["creative-qa"]
    runs = MlflowClient().search_runs([e.experiment_id for e in exps if e.name == "creative-qa"])
    assert {r.info.run_id for r in runs} == run_ids


ARTIFACT_SNIPPET = """
from training import tracking
import mlflow
exp = tracking.setup("creative-qa")
with mlflow.start_run(experiment_id=exp) as run:
    mlflow.log_text("hello", "note.txt")
print(run.info.artifact_uri)
"""


def test_a_sqlite_store_keeps_artifacts_beside_its_database_not_in_the_working_folder(tmp_path):
    """MLflow's default for a sqlite:/// store is ./mlruns under the caller's folder: ours is beside the db."""
    store, cwd = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    cwd.mkdir()
    env = os.environ | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'team.db'}",
        "CREATIVE_QA_HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    out = subprocess.run(
        [sys.executable, "-c", ARTIFACT_SNIPPET], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(cwd.iterdir()) == []
    assert [p.read_text() for p in (store / "mlartifacts").rglob("note.txt")] == ["hello"]
