"""`train --resume CHECKPOINT` takes the run's settings from the checkpoint and refuses to change what it learns."""

import pytest

from tests.conftest import TINY_OVERRIDES
from training.cli import resume_config
from training.config import ConfigError, load_config
from training.loop import train

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it


@pytest.fixture(scope="module")
def stopped(tiny_data, tmp_path_factory):
    """A run stopped after its first epoch of two (a step checkpoint, as a kill would leave)."""
    out = tmp_path_factory.mktemp("stopped")
    cfg = load_config(
        "default",
        [*TINY_OVERRIDES, "optim.steps_per_epoch=1", f"data.labeled={tiny_data['train_labeled']}", f"output_dir={out}"],
    )
    return train(cfg).checkpoint, cfg


def test_resume_takes_data_recipe_and_settings_from_the_checkpoint(stopped):
    ckpt, cfg = stopped
    got = resume_config(str(ckpt), None, [])
    assert got.to_dict() == cfg.to_dict()
    # where and how it runs may change
    assert resume_config(str(ckpt), None, ["threads=1", "data.workers=1"]).threads == 1


@pytest.mark.parametrize(
    ("overrides", "named"),
    [(["optim.epochs=3"], "optim.epochs: 1 -> 3"), (["data.unlabeled=/elsewhere"], "data.unlabeled: None")],
)
def test_resume_refuses_overrides_that_change_what_the_run_learns(stopped, overrides, named):
    ckpt, _ = stopped
    with pytest.raises(ConfigError, match="would change it") as e:
        resume_config(str(ckpt), None, overrides)
    assert named in str(e.value)


def test_resume_refuses_a_recipe_and_a_missing_checkpoint(stopped, tmp_path):
    ckpt, _ = stopped
    with pytest.raises(ConfigError, match="drop --recipe"):
        resume_config(str(ckpt), "demo", [])
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        resume_config(str(tmp_path / "last.pt"), None, [])


def test_train_makes_its_paths_absolute_so_it_resumes_from_any_folder(tiny_data, tmp_path, monkeypatch):
    from training.config import absolute_paths

    monkeypatch.chdir(tiny_data["train_labeled"].parent)
    cfg = absolute_paths(
        load_config("default", ["data.labeled=train_labeled.csv", "output_dir=runs/a", "data.taxonomy=v1"])
    )
    assert cfg.data.labeled == str(tiny_data["train_labeled"])
    assert cfg.output_dir == str(tiny_data["train_labeled"].parent / "runs" / "a")
    assert cfg.data.taxonomy == "v1"  # a built-in name, not a path


def test_a_run_started_before_a_view_field_existed_resumes_with_the_views_it_started_with(stopped, tmp_path):
    from training.checkpoint import Checkpoint

    ckpt, cfg = stopped
    old = Checkpoint.load(ckpt)
    del old.config["model"]["reduce"]  # a run from before model.reduce: its views were made from the full size
    old.preprocess.pop("reduce")
    old.save(tmp_path / "last.pt")
    got = resume_config(str(tmp_path / "last.pt"), None, [])
    assert cfg.model.reduce == 1 and got.model.reduce == 0
    assert {k: v for k, v in got.to_dict()["model"].items() if k != "reduce"} == {
        k: v for k, v in cfg.to_dict()["model"].items() if k != "reduce"
    }
    # resumed with a config that makes other views (today's default), the run refuses rather than mixing them
    with pytest.raises(ValueError, match=r"other views than this config makes \({'reduce': \(0, 1\)}"):
        train(cfg, resume=tmp_path / "last.pt")
