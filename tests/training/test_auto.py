"""`creative-qa train` without a recipe (auto): both candidates trained, the higher validation mAP kept, the
choice recorded in MLflow; bounded by --budget; resumable from its folder."""

import json
import math

import pytest
from mlflow.tracking import MlflowClient

from creative_qa.cli import main as cli
from tests.conftest import TINY_OVERRIDES
from training import tracking
from training.auto import RECORD, choose, estimated_rates, give_rates

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it


def test_choose_keeps_the_higher_validation_map_and_the_floor_on_a_tie():
    assert choose({"supervised": 0.55, "default": 0.61})[0] == "default"
    assert choose({"supervised": 0.61, "default": 0.55})[0] == "supervised"
    assert choose({"supervised": 0.6, "default": 0.6})[0] == "supervised"
    assert choose({"supervised": math.nan, "default": 0.2})[0] == "default"
    best, why = choose({"supervised": 0.5, "default": 0.7})
    assert why == "default has the highest validation mAP (0.700 vs supervised 0.500)"


def test_the_estimated_rates_reach_a_forward_correction_the_team_did_not_set():
    from training.config import load_config

    cfg = load_config("default")
    assert cfg.method.params["loss"] == "forward"
    assert give_rates(cfg, (0.12, 0.03), ["optim.epochs=2"])
    assert cfg.method.params["loss_params"] == {"miss_rate": 0.12, "fp_rate": 0.03}
    for theirs in (["method.params.loss_params.miss_rate=0.2"], ["method.params.loss_params={miss_rate: 0.2}"]):
        mine = load_config("default", theirs)
        before = dict(mine.method.params["loss_params"])
        assert not give_rates(mine, (0.12, 0.03), theirs) and mine.method.params["loss_params"] == before
    other = load_config("default", ["method.params.loss=bce"])
    assert not give_rates(other, (0.12, 0.03), []) and "loss_params" in other.method.params
    assert other.method.params["loss_params"] == {"miss_rate": 0.3, "fp_rate": 0.05}


def _train(args, capsys) -> dict:
    cli(["train", *args])
    return json.loads(capsys.readouterr().out)


def _overrides(tiny_data, out):
    return [*TINY_OVERRIDES, "optim.steps_per_epoch=2", f"data.labeled={tiny_data['train_labeled']}",
            f"data.unlabeled={tiny_data['unlabeled']}", f"output_dir={out}"]  # fmt: skip


def test_a_rate_estimate_is_handed_on_only_when_it_rests_on_enough_labels(tmp_path):
    from creative_qa.flags import FlagPolicy
    from creative_qa.taxonomy import load_taxonomy
    from training.checkpoint import Checkpoint
    from training.config import load_config
    from training.loop import spec_of
    from training.model import build_model

    cfg = load_config("default", list(TINY_OVERRIDES))
    ckpt = Checkpoint.for_model(build_model(cfg.model, len(load_taxonomy())), cfg, load_taxonomy(), spec_of(cfg))
    cases = [("estimated", (40, 300), (0.1234, 0.0345)), ("estimated", (9, 300), None), ("estimated", (40, 9), None),
             ("given", (0, 0), None)]  # fmt: skip
    for source, anchors, expected in cases:
        ckpt.flags = FlagPolicy(0.8, 0.12341, 0.03449, source, {}, anchors).to_dict()
        ckpt.save(tmp_path / "c.pt")
        assert estimated_rates(tmp_path / "c.pt") == expected
    old = FlagPolicy(0.8, 0.12, 0.03, "estimated", {}).to_dict()
    del old["anchors"]  # a policy from before the field: nothing says what it rests on
    ckpt.flags = old
    ckpt.save(tmp_path / "c.pt")
    assert estimated_rates(tmp_path / "c.pt") is None


def test_train_without_a_recipe_trains_both_keeps_the_better_and_resumes(
    fresh_home, tiny_data, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr("training.auto.MIN_ANCHORS", 0)  # the tiny validation split: take its estimate anyway
    out = tmp_path / "first"
    got = _train(_overrides(tiny_data, out), capsys)
    assert got["recipe"] == "auto" and set(got["candidates"]) == {"supervised", "default"}
    vals = {k: c["val_mAP"] for k, c in got["candidates"].items()}
    assert got["chosen"] == choose(vals)[0] and got["reason"].startswith(choose(vals)[1])
    chosen = got["candidates"][got["chosen"]]
    assert (out / "last.pt").read_bytes() == (out / got["chosen"] / "last.pt").read_bytes()
    assert got["run_id"] == chosen["run_id"] and got["checkpoint"] == str(out / "last.pt")
    assert {c["method"] for c in got["candidates"].values()} == {"supervised", "defect_synthesis"}
    # the floor's estimated annotator rates, not the recipe's constants, went to the default's forward correction
    from training.checkpoint import Checkpoint

    rates = estimated_rates(out / "supervised" / "last.pt")
    assert rates is not None and got["candidates"]["default"]["rates"] == list(rates)
    trained = Checkpoint.load(out / "default" / "last.pt").config["method"]["params"]["loss_params"]
    assert trained == {"miss_rate": rates[0], "fp_rate": rates[1]} != {"miss_rate": 0.3, "fp_rate": 0.05}
    assert f"{rates[0]:.0%} of positives missed" in got["reason"]

    tracking.setup("creative-qa")
    client = MlflowClient()
    parent = client.get_run(got["parent_run_id"])
    assert parent.data.params["auto.chosen"] == got["chosen"] and parent.data.tags["creative_qa.recipe"] == "auto"
    assert float(parent.data.params["auto.annotator_miss_rate"]) == rates[0]
    for c in got["candidates"].values():
        assert client.get_run(c["run_id"]).data.tags["mlflow.parentRunId"] == got["parent_run_id"]
    runs = len(client.search_runs([parent.info.experiment_id]))
    assert runs == 3

    # a kill during the second candidate: its record is gone, its checkpoint stays; --resume FOLDER finishes
    # the same runs (the first read back, the second resumed), no new one
    record = json.loads((out / RECORD).read_text())
    record["candidates"].pop("default")
    (out / RECORD).write_text(json.dumps(record))
    (out / "last.pt").unlink()
    # ... and that candidate started before model.reduce existed: it resumes with the views it started with
    from training.checkpoint import Checkpoint

    ckpt = Checkpoint.load(out / "default" / "last.pt")
    del ckpt.config["model"]["reduce"]
    ckpt.preprocess.pop("reduce")
    ckpt.save(out / "default" / "last.pt")
    again = _train(["--resume", str(out)], capsys)
    assert Checkpoint.load(out / "default" / "last.pt").preprocess["reduce"] == 0
    assert again["parent_run_id"] == got["parent_run_id"] and (out / "last.pt").is_file()
    assert {k: c["run_id"] for k, c in again["candidates"].items()} == {
        k: c["run_id"] for k, c in got["candidates"].items()
    }
    assert len(client.search_runs([parent.info.experiment_id])) == runs


def test_budget_keeps_the_floor_when_the_default_would_not_fit(fresh_home, tiny_data, tmp_path, capsys):
    got = _train(["--budget", "1", *_overrides(tiny_data, tmp_path / "b")], capsys)
    assert list(got["candidates"]) == ["supervised"] and got["chosen"] == "supervised"
    assert "default skipped" in got["reason"] and "s of the budget left" in got["reason"]


def test_budget_needs_auto(tiny_data, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli(["train", "--recipe", "demo", "--budget", "10", f"data.labeled={tiny_data['train_labeled']}"])
    assert e.value.code != 0
