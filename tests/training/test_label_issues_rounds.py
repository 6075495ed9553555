import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_OVERRIDES
from training import tracking
from training.config import load_config
from training.label_issues import find_label_issues, issue_table, precision_at_k
from training.loop import train

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

NAN = float("nan")


def test_issue_table_ranks_known_labels_by_disagreement(tmp_path):
    labels = np.array([[1, 0], [0, NAN], [1, 1]])
    probs = np.array([[0.9, 0.8], [0.1, 0.5], [0.2, 0.95]])
    t = issue_table(["a", "b", "c"], labels, probs, ["x", "y"])
    assert len(t) == 5  # the blank is not judged
    assert list(zip(t["path"], t["tag"], strict=True))[:2] == [("a", "y"), ("c", "x")]
    assert t["score"].iloc[0] == 0.8 and t["given"].iloc[0] == 0
    clean = tmp_path / "clean.csv"
    pd.DataFrame({"path": [str(tmp_path / p) for p in "abc"], "x": [1, 0, 0], "y": [1, 0, 1]}).to_csv(
        clean, index=False
    )
    t["path"] = [str(tmp_path / p) for p in t["path"]]
    p = precision_at_k(t, clean, ks=(1, 2, 5), tags=["x", "y"])
    assert p["precision@1"] == 1.0 and p["precision@2"] == 1.0 and p["precision@5"] == 0.4
    assert p["true_issues"] == 2


def test_cross_validated_label_issues_cover_every_known_label(tiny_data, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the folds' scratch folder is made
    cfg = load_config(
        "default",
        [
            *TINY_OVERRIDES,
            "optim.steps_per_epoch=2",
            f"data.labeled={tiny_data['train_labeled']}",
            f"output_dir={tmp_path}",
        ],
    )
    issues = find_label_issues(cfg, folds=2)
    noisy = pd.read_csv(tiny_data["train_labeled"])
    tags = [c for c in noisy.columns if c not in ("path", "quality", "defects", "media", "pair")]
    assert len(issues) == int(noisy[tags].notna().to_numpy().sum())
    assert issues["score"].is_monotonic_decreasing
    assert issues["score"].between(0, 1).all()
    assert list(scratch.iterdir()) == []  # the folds' manifests and checkpoints are gone


def test_noisy_student_rounds_are_nested_mlflow_runs(tiny_data, tmp_path, fresh_home):
    cfg = load_config(
        "noisy_student",
        [
            *TINY_OVERRIDES,
            "optim.steps_per_epoch=2",
            f"data.labeled={tiny_data['train_labeled']}",
            f"data.unlabeled={tiny_data['unlabeled']}",
            f"output_dir={tmp_path}",
            "experiment=ns",
            "method.params={rounds: 1, confidence: 0.0}",
        ],
    )
    result = train(cfg)
    exp = tracking.setup("ns")
    runs = MlflowClient().search_runs([exp])
    parents = [r for r in runs if r.data.tags.get("rounds") == "1"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.info.run_name for r in children) == ["round-0", "round-1"]
    student = next(r for r in children if r.info.run_name == "round-1")
    assert student.info.run_id == result.run_id
    assert "round-0" in student.data.params["method.params"]  # the student learned from round 0's teacher
    assert (tmp_path / "round-1" / "last.pt").is_file()
    # the budget of the whole method: both rounds' passes (the student's teacher counted in round 1), in the
    # result and on the parent run; each round's own on its run
    per_round = [{k: int(r.data.metrics[f"passes_{k}"]) for k in result.passes} for r in children]
    assert result.passes == {k: sum(p[k] for p in per_round) for k in result.passes}
    assert all(p["train_views"] > 0 for p in per_round)
    assert parents[0].data.metrics["passes_train_views"] == result.passes["train_views"]
    assert result.metrics["passes_forward_only_views"] == result.passes["forward_only_views"]
