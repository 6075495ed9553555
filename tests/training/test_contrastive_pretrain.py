"""Self-supervised pretraining (contrastive_pretrain): the loss by hand, the positives, the stage contract, and
the two stages through the CLI."""

import json
import math
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from creative_qa.cli import main as cli
from tests.conftest import TINY_OVERRIDES
from training.checkpoint import Checkpoint
from training.config import load_config
from training.methods import get_method
from training.methods.contrastive_pretrain import nt_xent, window_pairs
from training.model import build_model, config_of

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

NAN = float("nan")


def test_nt_xent_by_hand():
    """Three orthogonal embeddings, each its own positive: every row sees 1/tau for the positive, 0 for 4 negatives."""
    z = torch.eye(3)
    tau = 0.5
    want = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 4))
    assert float(nt_xent(z, z.clone(), tau)) == pytest.approx(want, rel=1e-6)
    # pairing each row with another creative's embedding must cost more
    assert float(nt_xent(z, z[[1, 2, 0]], tau)) > want + 1.0


def _coded(n: int, v: int, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows filled with one value, 10 x creative + window (window 0 = the whole view, never a positive)."""
    images = torch.zeros(n, v, 8, 8, 3, dtype=torch.uint8)
    pool = torch.zeros(n, p, 8, 8, 3, dtype=torch.uint8)
    for i in range(n):
        for j in range(v):
            images[i, j] = 10 * i + j
        for j in range(p):
            pool[i, j] = 10 * i + v + j
    return images, pool


def test_positives_are_two_different_windows_of_the_same_creative():
    images, pool = _coded(n=6, v=3, p=2)
    seen = set()
    for seed in range(5):
        a, b = window_pairs(images, pool, torch.Generator().manual_seed(seed))
        assert a.shape == b.shape == (6, 1, 8, 8, 3)
        va, vb = a.flatten(1)[:, 0].long(), b.flatten(1)[:, 0].long()
        assert (va // 10 == torch.arange(6)).all() and (vb // 10 == torch.arange(6)).all()  # same creative
        assert (va % 10 != 0).all() and (vb % 10 != 0).all()  # detail windows, not the whole view
        assert (va != vb).all()  # two different windows
        seen |= set((va % 10).tolist())
    assert seen == {1, 2, 3, 4}  # served crops and pool windows are all drawn


def test_a_creative_with_one_window_pairs_it_with_itself():
    images, _ = _coded(n=3, v=2, p=0)
    a, b = window_pairs(images, None, torch.Generator().manual_seed(0))
    assert torch.equal(a.flatten(1)[:, 0], b.flatten(1)[:, 0])


def _batch(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = len(labels)
    return {
        "images": torch.randint(0, 256, (n, 3, 64, 64, 3), dtype=torch.uint8, generator=g),
        "crop_pool": torch.randint(0, 256, (n, 2, 64, 64, 3), dtype=torch.uint8, generator=g),
        "labels": labels,
        "quality": torch.rand(n, generator=g),
        "index": torch.arange(n),
    }


def test_the_stage_trains_the_backbone_reads_no_label_and_leaves_the_heads_alone():
    torch.manual_seed(0)
    model = build_model(load_config("default", TINY_OVERRIDES).model, 14)
    cls = get_method("contrastive_pretrain")
    assert cls.label_free and cls.uses_unlabeled
    method = cls(model)
    losses = []
    for labels in (torch.ones(4, 14), torch.full((4, 14), NAN)):
        torch.manual_seed(1)
        loss, logs = method.train_step(_batch(labels), _batch(torch.full((4, 14), NAN)), 0)
        losses.append(float(loss.detach()))
    assert losses[0] == pytest.approx(losses[1])  # the labels change nothing
    model.zero_grad()
    loss.backward()
    assert torch.isfinite(loss) and "loss_contrast" in logs
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert all(p.grad is None for p in (*model.tag_head.parameters(), *model.quality_head.parameters()))
    assert all(p.grad is not None for p in method.extra_parameters())


def test_pretraining_then_finetuning_through_the_cli(tiny_data, capsys, tmp_path, monkeypatch):
    """Two stages under one parent run; the second starts from the first's backbone and they share the epochs."""
    from training import loop

    starts = []  # (weights file, the backbone as built) for every model the loop builds

    def spy(model_cfg, num_tags):
        model = build_model(model_cfg, num_tags)
        starts.append((model_cfg.weights, {k: v.clone() for k, v in model.backbone.state_dict().items()}))
        return model

    monkeypatch.setattr(loop, "build_model", spy)
    cli(
        [
            "train",
            "--recipe",
            "contrastive_pretrain",
            *TINY_OVERRIDES,
            "optim.epochs=3",
            "optim.steps_per_epoch=2",
            f"data.labeled={tiny_data['train_labeled']}",
            f"data.unlabeled={tiny_data['unlabeled']}",
            "experiment=contrastive-test",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    fine = Checkpoint.load(out["checkpoint"])
    fine_cfg = config_of(fine)
    assert fine_cfg.method.name == "defect_synthesis" and fine_cfg.optim.epochs == 2
    weights = tmp_path / "run" / "pretrain" / "backbone.pth"
    assert Path(fine_cfg.model.weights) == weights
    pre = Checkpoint.load(tmp_path / "run" / "pretrain" / "last.pt")
    assert config_of(pre).optim.epochs == 1 and config_of(pre).method.name == "contrastive_pretrain"
    # each stage ran its share of the 3 x 2 steps: 1 epoch of pretraining, then 2 of fine-tuning
    assert pre.step == 2 and fine.step == 4
    # backbone.pth holds the backbone pretraining ended with ...
    saved = torch.load(weights)
    pre_backbone = {k.removeprefix("backbone."): v for k, v in pre.model.items() if k.startswith("backbone.")}
    assert saved.keys() == pre_backbone.keys()
    assert all(torch.equal(pre_backbone[k], v) for k, v in saved.items())
    # ... which pretraining moved away from the fresh initialisation it started from ...
    assert [w for w, _ in starts] == [None, str(weights)]  # two models built: from scratch, then from the file
    fresh, finetune_start = starts[0][1], starts[1][1]
    moved = [k for k, v in saved.items() if v.is_floating_point() and not torch.equal(v, fresh[k])]
    assert any(k.endswith("conv1.weight") for k in moved) and len(moved) > len(saved) / 2, moved
    # ... and fine-tuning started from exactly it, not from a fresh initialisation
    assert finetune_start.keys() == saved.keys()
    assert all(torch.equal(finetune_start[k], v) for k, v in saved.items())
    torch.manual_seed(123)
    built = build_model(fine_cfg.model, 14).backbone.state_dict()
    assert all(torch.equal(built[k], v) for k, v in saved.items())
    # the stages are nested MLflow runs under one parent
    client = MlflowClient()
    child = client.get_run(out["run_id"])
    parent_id = child.data.tags["mlflow.parentRunId"]
    exp = client.get_run(parent_id).info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(r.info.run_name for r in children) == ["finetune", "pretrain"]
    methods = {r.info.run_name: r.data.params["method.name"] for r in children}
    assert methods == {"pretrain": "contrastive_pretrain", "finetune": "defect_synthesis"}
    assert client.get_run(parent_id).data.tags["finetune_run_id"] == out["run_id"]


def test_one_epoch_of_n_steps_is_shared_by_steps(tiny_data, capsys, tmp_path):
    cli(
        [
            "train",
            "--recipe",
            "contrastive_pretrain",
            *TINY_OVERRIDES,  # one epoch
            "optim.steps_per_epoch=4",
            f"data.labeled={tiny_data['train_labeled']}",
            f"data.unlabeled={tiny_data['unlabeled']}",
            "experiment=contrastive-test",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    fine = config_of(Checkpoint.load(json.loads(capsys.readouterr().out)["checkpoint"]))
    pre = config_of(Checkpoint.load(tmp_path / "run" / "pretrain" / "last.pt"))
    assert (pre.optim.epochs, pre.optim.steps_per_epoch) == (1, 1)  # 30 % of 4 steps, rounded
    assert (fine.optim.epochs, fine.optim.steps_per_epoch) == (1, 3)
