"""Champion/challenger promotion: refused on a regression, done on an improvement, forced and recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from creative_qa.taxonomy import load_taxonomy
from creative_qa.taxonomy_map import identity_mapping, load_mapping
from tests.conftest import TINY_OVERRIDES
from training.promote import compare, promote

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

NAME = "promo-test"


def test_compare_flags_only_shared_tags_that_drop_beyond_tolerance():
    v1 = load_taxonomy()
    m = identity_mapping(v1)
    labels = np.tile(np.array([[1.0], [0.0], [1.0], [0.0]], np.float32), (1, len(v1)))
    good = np.tile(np.array([[0.9], [0.1], [0.8], [0.2]]), (1, len(v1)))
    bad = good.copy()
    bad[:, 0] = [0.1, 0.9, 0.8, 0.2]  # tag 0: neg, pos, neg, pos by score -> AP (1/2 + 2/4) / 2 = 0.5
    rows = {r.tag: r for r in compare(good, bad, labels, m, tolerance=0.05)}
    assert rows[v1.tag_names[0]].verdict == "regression"
    assert rows[v1.tag_names[0]].delta == pytest.approx(-0.5)
    assert all(r.verdict == "ok" for t, r in rows.items() if t != v1.tag_names[0])
    rows = {r.tag: r for r in compare(bad, good, labels, m, tolerance=0.05)}
    assert all(r.verdict == "ok" for r in rows.values())  # an improvement is never a regression


def test_compare_through_a_mapping_uses_the_noisy_or_for_a_merge():
    m = load_mapping("v1_to_v2")
    v1, v2 = m.old, m.new
    n = 6
    labels = np.zeros((n, len(v2)), np.float32)
    labels[[0, 1], v2.index("bad_exposure")] = 1
    champ = np.full((n, len(v1)), 0.1)
    champ[0, v1.index("overexposed")] = 0.9  # each positive is seen by a different source
    champ[1, v1.index("underexposed")] = 0.9
    chall = np.full((n, len(v2)), 0.1)
    chall[:, v2.index("bad_exposure")] = [0.2, 0.3, 0.9, 0.1, 0.1, 0.1]
    rows = {r.tag: r for r in compare(champ, chall, labels, m, tolerance=0.02)}
    assert rows["bad_exposure"].champion_ap == pytest.approx(1.0)
    assert rows["bad_exposure"].verdict == "regression"
    assert rows["photo_background"].champion_ap is None and rows["motion_blur"].verdict in ("new", "n/a")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, tiny_data):
    """Two differently initialised tiny models of taxonomy v1, exported to ONNX."""
    import torch

    from training.checkpoint import Checkpoint
    from training.config import load_config
    from training.export import export_onnx
    from training.loop import spec_of
    from training.model import build_model

    cfg = load_config("default", TINY_OVERRIDES)
    tax = load_taxonomy()
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ckpt = Checkpoint.for_model(
            build_model(cfg.model, len(tax)),
            cfg,
            tax,
            spec_of(cfg),
            run_id="test",
        )
        out.append(export_onnx(ckpt, tmp_path_factory.mktemp(f"m{seed}") / "m.onnx", version="0", name=NAME))
    return out


def _register(onnx_path: Path, alias: str) -> str:
    import onnx
    from mlflow.tracking import MlflowClient

    import mlflow
    from training import tracking

    tracking.setup("promo-test")
    with mlflow.start_run(experiment_id=tracking.setup("promo-test")):
        info = mlflow.onnx.log_model(onnx.load(str(onnx_path)), name="onnx", save_as_external_data=False)
    mv = mlflow.register_model(info.model_uri, NAME)
    MlflowClient().set_registered_model_alias(NAME, alias, mv.version)
    return str(mv.version)


def _eval_manifest(tmp_path: Path, tiny_data, onnx_path: Path, name: str) -> Path:
    """Labels that one model ranks perfectly: its top third per tag is positive."""
    from creative_qa.batch import score_frame_table
    from creative_qa.manifest import read_manifest
    from creative_qa.scorer import Scorer

    df = read_manifest(tiny_data["test"])
    scorer = Scorer(onnx_path)
    table = score_frame_table(scorer, df["abspath"].tolist(), df["path"].tolist(), progress=False)
    out = pd.DataFrame({"path": df["abspath"]})
    k = max(2, len(df) // 3)
    for t in scorer.tags:
        p = table[t].to_numpy()
        out[t] = (p >= np.sort(p)[-k]).astype(int)
    path = tmp_path / f"{name}.csv"
    out.to_csv(path, index=False)
    return path


def test_promotion_refused_on_regression_done_on_improvement_and_forced(two_models, tiny_data, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from creative_qa.cli import main as cli

    a, b = two_models
    v_a = _register(a, "champion")
    v_b = _register(b, "challenger")
    client = MlflowClient()

    # Labels that the champion ranks perfectly: the challenger regresses -> refused, aliases unchanged.
    favours_a = _eval_manifest(tmp_path, tiny_data, a, "favours_a")
    with pytest.raises(SystemExit) as refused:
        cli(["promote", "--eval", str(favours_a), "--name", NAME, "--tolerance", "0.01"])
    assert refused.value.code == 3  # a refusal, told apart from a crash (1)
    captured = capsys.readouterr()
    assert "not promoted" in captured.err
    out = captured.out
    assert "regression" in out and "champion" in out  # the table is printed either way
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v_a
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == v_b
    assert client.get_model_version(NAME, v_b).tags["promotion_refused"]

    # Labels that the challenger ranks perfectly: an improvement on every shared tag -> promoted.
    favours_b = _eval_manifest(tmp_path, tiny_data, b, "favours_b")
    result = promote(str(favours_b), NAME, tolerance=0.01)
    assert result.promoted and not result.forced and not result.regressions
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v_b
    assert client.get_model_version(NAME, v_b).tags["promotion_forced"] == "false"
    assert client.get_model_version(NAME, v_a).tags["superseded_by"] == v_b

    # A new challenger that regresses is refused, unless forced: then recorded in the registry.
    v_c = _register(a, "challenger")
    assert not promote(str(favours_b), NAME, tolerance=0.01).promoted
    forced = promote(str(favours_b), NAME, tolerance=0.01, force=True)
    assert forced.promoted and forced.forced and forced.regressions
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v_c
    tags = client.get_model_version(NAME, v_c).tags
    assert tags["promotion_forced"] == "true" and forced.regressions[0].tag in tags["promotion_regressions"]
