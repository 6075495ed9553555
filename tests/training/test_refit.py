"""The head refit (``training.refit``): a logistic regression per tag over the trained features, folded into the
tag head; the backbone's features scaled down; the recipe's noise correction; blanks ignored; only the head."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from tests.conftest import TINY_OVERRIDES
from training.checkpoint import Checkpoint
from training.config import load_config
from training.loop import train
from training.refit import fit_logistic, refit_head


class Features(nn.Module):
    """A stand-in model whose features are its input rows: ``refit_head`` needs ``features`` and ``tag_head``."""

    def __init__(self, width: int, tags: int):
        super().__init__()
        self.tag_head = nn.Linear(width, tags)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


def _data(n: int, seed: int, backbone: int = 60):
    """``backbone`` noise columns, then 3 informative ones; tag 0 follows column backbone+0, tag 1 column backbone+1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, backbone + 3)).astype(np.float32)
    x[:, backbone:] *= 5.0  # a scale the refit must standardise away
    truth = np.stack([x[:, backbone] > 2.0, x[:, backbone + 1] > 0.0], 1).astype(np.float32)
    return x, truth


def test_refit_ranks_with_the_informative_features_and_folds_into_the_head():
    x, y = _data(400, 0)
    xt, yt = _data(2000, 1)
    model = Features(x.shape[1], 2)
    torch.manual_seed(0)
    nn.init.normal_(model.tag_head.weight)  # a head that ranks by noise
    before = [average_precision_score(yt[:, j], (xt @ model.tag_head.weight.detach().numpy().T)[:, j]) for j in (0, 1)]
    report = refit_head(model, x, torch.tensor(y), torch.device("cpu"), backbone_features=60)
    logits = model.tag_head(torch.tensor(xt)).detach().numpy()
    after = [average_precision_score(yt[:, j], logits[:, j]) for j in (0, 1)]
    assert max(before) < 0.7 and min(after) > 0.9, (before, after)
    assert report.rows == 400 and report.tags == 2 and report.loss_after < report.loss_before
    # the folded head is a plain linear map of the raw features: the training rows' mean probability is the prior
    p = torch.sigmoid(model.tag_head(torch.tensor(x))).mean(0).detach().numpy()
    assert np.allclose(p, y.mean(0), atol=0.03), (p, y.mean(0))


def test_backbone_scale_shifts_weight_off_the_backbone():
    """With the backbone's columns scaled down their (standardised) weights shrink against the others'."""
    x, y = _data(300, 2)
    x[:, 0] = x[:, 60] + np.random.default_rng(3).normal(size=300) * 0.5  # a backbone column that also tells tag 0
    xs, ys = torch.tensor(x), torch.tensor(y)
    sd = xs.std(0)
    share = {}
    for scale_bb in (1.0, 0.1):
        scale = torch.ones(x.shape[1])
        scale[:60] = scale_bb
        w, _, fitted = fit_logistic(xs, ys, scale, c=0.03)
        std_w = (w[0] * sd).abs()
        share[scale_bb] = float(std_w[:60].sum() / std_w.sum())
        assert fitted.all()
    assert share[0.1] < 0.5 * share[1.0], share


def test_forward_correction_recovers_the_true_rate_and_blanks_are_ignored():
    x, truth = _data(3000, 4)
    rng = np.random.default_rng(5)
    given = truth.copy()
    given[(truth == 1) & (rng.random(truth.shape) < 0.3)] = 0.0  # annotators miss 30 % of positives
    given[rng.random(truth.shape) < 0.2] = np.nan  # and leave a fifth blank
    scale = torch.ones(x.shape[1])
    xs, gs = torch.tensor(x), torch.tensor(given)
    plain = fit_logistic(xs, gs, scale, c=1.0)
    fixed = fit_logistic(xs, gs, scale, c=1.0, miss_rate=0.3)
    rate = {
        name: float(torch.sigmoid(xs @ w.T + b)[:, 1].mean())
        for name, (w, b, _) in {"plain": plain, "fixed": fixed}.items()
    }
    true = float(truth[:, 1].mean())
    assert abs(rate["fixed"] - true) < 0.03 < abs(rate["plain"] - true), (rate, true)


def test_keep_mixes_the_trained_heads_logits_into_the_refit():
    """``head.keep`` of the trained head's logits: with a trained head that knows what the labels cannot teach
    (tag 1 here: its labels are noise), the mix ranks by both; keep 0 is the plain refit."""
    from training.config import HeadConfig

    x, truth = _data(400, 7)
    xt, yt = _data(2000, 8)
    y = truth.copy()
    y[:, 1] = np.random.default_rng(9).random(len(y)) < 0.5  # tag 1's labels tell nothing
    heads = {}
    for keep in (0.0, 0.5):
        model = Features(x.shape[1], 2)
        with torch.no_grad():
            model.tag_head.weight.zero_()
            model.tag_head.bias.zero_()
            model.tag_head.weight[1, 61] = 1.0  # the trained head knows tag 1's column
        trained = model.tag_head.weight.detach().clone(), model.tag_head.bias.detach().clone()
        refit_head(
            model,
            x,
            torch.tensor(y),
            torch.device("cpu"),
            60,
            HeadConfig(keep=keep),
            kept=torch.ones(2, dtype=torch.bool),
        )
        heads[keep] = model.tag_head.weight.detach().clone(), model.tag_head.bias.detach().clone()
    refit_w, refit_b = heads[0.0]
    mixed_w, mixed_b = heads[0.5]
    assert torch.allclose(mixed_w, 0.5 * trained[0] + 0.5 * refit_w, atol=1e-6)
    assert torch.allclose(mixed_b, 0.5 * trained[1] + 0.5 * refit_b, atol=1e-6)
    ap = {k: average_precision_score(yt[:, 1], xt @ w[1].numpy() + b[1].numpy()) for k, (w, b) in heads.items()}
    assert ap[0.5] > 0.9 > 0.7 > ap[0.0], ap


def test_the_trained_rows_are_kept_only_on_the_tags_the_method_taught():
    """Defect synthesis teaches its synthesised defects from the pool (not JPEG with the grid view: a copy's JPEG
    evidence cannot be made); supervised training teaches nothing beyond the labels. ``kept`` limits the mix."""
    from creative_qa.preprocess import PreprocessSpec
    from creative_qa.taxonomy import load_taxonomy
    from training.config import HeadConfig
    from training.methods import get_method
    from training.model import CreativeModel

    tags = load_taxonomy().tag_names
    net = CreativeModel("test_resnet", num_tags=len(tags), views=2)
    taught = {}
    for name in ("defect_synthesis", "supervised"):
        method = get_method(name)(net)
        method.tags, method.spec = tags, PreprocessSpec(input_size=32, crops=1, detail_side=64, grid_view=1)
        taught[name] = method.taught_tags()
    assert taught["supervised"] == []
    assert set(taught["defect_synthesis"]) == {
        "blurry", "low_resolution", "noisy", "pixelated", "overexposed", "underexposed", "low_contrast"
    }  # fmt: skip

    x, y = _data(300, 10)
    heads = {}
    for keep, kept in ((0.0, None), (0.5, torch.tensor([False, True])), (0.25, None)):
        model = Features(x.shape[1], 2)
        with torch.no_grad():
            model.tag_head.weight.fill_(0.1)
        trained = model.tag_head.weight.detach().clone()
        refit_head(model, x, torch.tensor(y), torch.device("cpu"), 60, HeadConfig(keep=keep), kept=kept)
        heads[keep] = model.tag_head.weight.detach().clone()
    assert torch.equal(heads[0.25], heads[0.0])  # no tags named: nothing kept, whatever head.keep
    assert torch.equal(heads[0.5][0], heads[0.0][0])  # not kept: the refit's row
    assert torch.allclose(heads[0.5][1], 0.5 * trained[1] + 0.5 * heads[0.0][1], atol=1e-6)


def test_a_tag_without_two_positives_keeps_its_trained_row():
    x, y = _data(200, 6)
    y[:, 0] = 0.0
    y[0, 0] = 1.0  # one positive: nothing to fit
    model = Features(x.shape[1], 2)
    old = model.tag_head.weight.detach().clone()
    report = refit_head(model, x, torch.tensor(y), torch.device("cpu"), backbone_features=60)
    assert report.tags == 1
    assert torch.equal(model.tag_head.weight[0], old[0]) and not torch.equal(model.tag_head.weight[1], old[1])


@pytest.mark.slow
def test_training_refits_only_the_tag_head_after_the_last_step(tiny_data, tmp_path):
    base = [*TINY_OVERRIDES, f"data.labeled={tiny_data['train_labeled']}", "optim.steps_per_epoch=6"]
    base += ["method.name=supervised", "method.params={}"]
    off = train(
        load_config(
            "default",
            [*base, "head.refit=false", f"output_dir={tmp_path / 'off'}"],
        )
    )
    on = train(load_config("default", [*base, f"output_dir={tmp_path / 'on'}"]))
    a, b = (Checkpoint.load(r.checkpoint) for r in (off, on))
    a, b = a.eval_model or a.model, b.eval_model or b.model  # what is evaluated and exported (a weight average)
    head = {"tag_head.weight", "tag_head.bias"}
    assert all(torch.equal(a[k], b[k]) for k in a if k not in head)  # the same training, step for step
    assert not torch.equal(a["tag_head.weight"], b["tag_head.weight"])
    assert on.metrics["val_mAP_before_refit"] == pytest.approx(off.metrics["val_mAP"])
    assert "val_mAP_before_refit" not in off.metrics
