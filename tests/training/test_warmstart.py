"""Warm start across a taxonomy change: the new tag head from the old one, pseudo-labels, the run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from creative_qa.taxonomy import load_taxonomy
from creative_qa.taxonomy_map import load_mapping
from tests.conftest import TINY_OVERRIDES
from training.config import load_config
from training.model import build_model
from training.warmstart import (
    build_tag_head,
    check_mix,
    distill_targets,
    fit_merge,
    label_prior,
    mix_state,
    noisy_or_logit,
    pin_resumed_parent,
    pseudo_labels,
    resolve_parent,
    warm_start_model,
)

V1, V2 = load_taxonomy("v1"), load_taxonomy("v2")


@pytest.fixture(scope="module")
def parent():
    torch.manual_seed(0)
    model = build_model(load_config("default", TINY_OVERRIDES).model, len(V1)).eval()
    with torch.no_grad():  # a head with real spread, so every check below compares distinct numbers
        model.tag_head.weight.normal_(0, 0.5)
        model.tag_head.bias.uniform_(-2, 1)
    return model


def _images(n: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    views = load_config("default", TINY_OVERRIDES).model.views
    return torch.randint(0, 256, (n, views, 64, 64, 3), dtype=torch.uint8, generator=g)


def test_noisy_or_logit_hand_computed():
    # two sources at p = 0.5: P(any) = 0.75, logit = log 3
    assert noisy_or_logit(np.array([[0.0, 0.0]]))[0] == pytest.approx(math.log(3))
    # one source: the noisy-or is the source itself
    assert noisy_or_logit(np.array([[1.3]]))[0] == pytest.approx(1.3, abs=1e-6)


def test_renamed_and_kept_tags_predict_exactly_as_before_right_after_the_warm_start(parent):
    m = load_mapping("v1_to_v2")
    child = warm_start_model(parent, m, prior=np.full(len(V2), 0.2)).eval()
    x = _images()
    with torch.no_grad():
        old_tags, old_q = parent(x)
        new_tags, new_q = child(x)
    old_p, new_p = torch.sigmoid(old_tags), torch.sigmoid(new_tags)
    assert torch.equal(new_q, old_q)  # backbone and quality head carried over
    pairs = {"compression_artifacts": "jpeg_artifacts", **{t: t for t in ("noisy", "watermark", "has_logo")}}
    for new, old in pairs.items():
        torch.testing.assert_close(new_p[:, V2.index(new)], old_p[:, V1.index(old)], rtol=0, atol=1e-6)
    # split children start from their parent with half its prior odds; added tags sit at their prior
    blurry = old_tags[:, V1.index("blurry")]
    for t in ("motion_blur", "defocus_blur"):
        torch.testing.assert_close(new_tags[:, V2.index(t)], blurry - math.log(2), rtol=0, atol=1e-5)
    assert torch.allclose(new_p[:, V2.index("photo_background")], torch.tensor(0.2), atol=1e-5)
    # the parent itself is untouched
    assert parent.tag_head.out_features == len(V1)


def test_merged_row_fits_the_noisy_or_of_its_sources():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(400, 6))
    w = torch.tensor(rng.normal(size=(2, 6)), dtype=torch.float32)
    b = torch.tensor([-2.0, -1.0])
    z = feats @ w.numpy().T + b.numpy()
    target = noisy_or_logit(z)
    fw, fb = fit_merge(z, w, b)
    fitted = feats @ fw.numpy() + fb.numpy()
    mw, mb = fit_merge(None, w, b)  # no data: mean row
    mean_row = feats @ mw.numpy() + mb.numpy()
    err_fit, err_mean = np.abs(fitted - target).mean(), np.abs(mean_row - target).mean()
    # A linear row cannot be a max, but the least-squares one is the closest: closer than the mean row.
    assert err_fit < 0.8 * err_mean
    assert np.corrcoef(fitted, target)[0, 1] > np.corrcoef(mean_row, target)[0, 1] > 0.8


def test_build_tag_head_copies_rows_by_rule():
    m = load_mapping("v1_to_v2")
    w = torch.arange(len(V1) * 3, dtype=torch.float32).reshape(len(V1), 3)
    b = torch.arange(len(V1), dtype=torch.float32)
    prior = label_prior(np.array([[1, 0], [0, 0], [np.nan, 0], [0, np.nan]], dtype=np.float32))
    assert prior[0] == pytest.approx((1 + 0.1) / 4) and prior[1] == pytest.approx(0.1 / 4)
    nw, nb = build_tag_head(m, w, b, np.full(len(V2), 0.25))
    j = V1.index("jpeg_artifacts")
    assert torch.equal(nw[V2.index("compression_artifacts")], w[j]) and nb[V2.index("compression_artifacts")] == b[j]
    assert torch.equal(nw[V2.index("photo_background")], torch.zeros(3))
    assert nb[V2.index("photo_background")] == pytest.approx(math.log(0.25 / 0.75))


def test_pseudo_labels_fill_only_migration_blanks_where_the_parent_is_confident():
    m = load_mapping("v1_to_v2")
    i = {t: j for j, t in enumerate(V1.tag_names)}
    labels = m.migrate(np.zeros((5, len(V1)), np.float32))
    for t in ("motion_blur", "defocus_blur", "bad_exposure", "photo_background", "noisy"):
        labels[:, V2.index(t)] = np.nan
    labels[4, V2.index("bad_exposure")] = 0.0  # a known label is never overwritten
    probs = np.full((5, len(V1)), 0.5, np.float32)
    probs[0, i["blurry"]] = 0.05  # confidently not blurry -> both children 0
    probs[1, i["blurry"]] = 0.95  # confidently blurry -> which kind is unknown: stays blank
    probs[0, [i["overexposed"], i["underexposed"]]] = 0.05  # every source confidently 0 -> 0
    probs[1, i["underexposed"]] = 0.97  # any source confidently 1 -> 1
    probs[4, i["overexposed"]] = 0.97
    probs[:, i["noisy"]] = 0.01
    out, counts = pseudo_labels(m, labels, probs, low=0.1, high=0.9)
    col = {t: out[:, V2.index(t)] for t in V2.tag_names}
    assert col["motion_blur"][0] == 0 and col["defocus_blur"][0] == 0
    assert np.isnan(col["motion_blur"][1:]).all()
    assert col["bad_exposure"][0] == 0 and col["bad_exposure"][1] == 1 and col["bad_exposure"][4] == 0
    assert np.isnan(col["bad_exposure"][2:4]).all()
    assert np.isnan(col["photo_background"]).all()  # the old model knows nothing of an added tag
    assert np.isnan(col["noisy"]).all()  # an annotator's blank on a kept tag is the method's job
    assert counts == {"motion_blur": 1, "defocus_blur": 1, "bad_exposure": 2}


def test_distill_targets_blend_carried_tags_with_the_parent_and_leave_the_rest():
    m = load_mapping("v1_to_v2")
    i = {t: j for j, t in enumerate(V1.tag_names)}
    labels = m.migrate(np.zeros((3, len(V1)), np.float32))
    labels[0, V2.index("noisy")] = 1.0
    labels[2, V2.index("noisy")] = np.nan  # an annotator's blank
    labels[1, V2.index("compression_artifacts")] = 1.0
    probs = np.full((3, len(V1)), 0.2, np.float32)
    probs[:, i["noisy"]] = [0.9, 0.3, 0.6]
    probs[:, i["jpeg_artifacts"]] = 0.7
    probs[:, i["overexposed"]], probs[:, i["underexposed"]] = 0.5, 0.4
    out = distill_targets(m, labels, probs, 0.25)
    col = {t: out[:, V2.index(t)] for t in V2.tag_names}
    np.testing.assert_allclose(col["noisy"][:2], [0.75 * 1 + 0.25 * 0.9, 0.75 * 0 + 0.25 * 0.3], rtol=1e-6)
    assert col["noisy"][2] == pytest.approx(0.6)  # a blank takes the parent's prediction
    # a renamed tag reads its old name's prediction; a merged one the noisy-or of its sources
    np.testing.assert_allclose(col["compression_artifacts"], [0.25 * 0.7, 0.75 + 0.25 * 0.7, 0.25 * 0.7], rtol=1e-6)
    np.testing.assert_allclose(col["bad_exposure"], 0.25 * (1 - 0.5 * 0.6), rtol=1e-6)
    # what the parent cannot say is left as the migration made it: split children and added tags
    for t in ("motion_blur", "defocus_blur", "photo_background", "striped_background"):
        np.testing.assert_array_equal(col[t], labels[:, V2.index(t)])
    np.testing.assert_array_equal(distill_targets(m, labels, probs, 0.0), labels)
    with pytest.raises(ValueError, match="distill"):
        distill_targets(m, labels, probs, 1.5)


def test_mix_state_interpolates_floats_and_keeps_counters():
    start = {"w": torch.tensor([0.0, 2.0]), "bn.running_var": torch.tensor([1.0]), "bn.n": torch.tensor(3)}
    final = {"w": torch.tensor([4.0, -2.0]), "bn.running_var": torch.tensor([3.0]), "bn.n": torch.tensor(9)}
    mixed = mix_state(start, final, 0.25)
    torch.testing.assert_close(mixed["w"], torch.tensor([1.0, 1.0]))  # 0.25 x final + 0.75 x start
    torch.testing.assert_close(mixed["bn.running_var"], torch.tensor([1.5]))
    assert int(mixed["bn.n"]) == 9  # a counter is not averaged
    torch.testing.assert_close(mix_state(start, final, 1.0)["w"], final["w"])
    torch.testing.assert_close(mix_state(start, final, 0.0)["w"], start["w"])
    assert check_mix([0.5, 1, 0.5]) == [1.0, 0.5]
    for bad in ([], [1.5], ["x"], 0.5, [True]):
        with pytest.raises(ValueError, match="warm_start.mix"):
            check_mix(bad)


def test_a_resume_starts_from_the_parent_its_checkpoint_names():
    cfg = load_config("default", ["warm_start.parent=models:/creative-qa@champion"])
    pin_resumed_parent(cfg, {"warm_start": {"parent": "models:/creative-qa/3"}})
    assert cfg.warm_start.parent == "models:/creative-qa/3"  # not wherever @champion points now
    fresh = load_config("default", [])
    pin_resumed_parent(fresh, {"warm_start": {"parent": "models:/creative-qa/3"}})
    assert fresh.warm_start.parent is None  # a run without a parent does not gain one


def test_unknown_parent_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        resolve_parent(str(tmp_path / "missing.pt"))
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": 1}, bogus)
    with pytest.raises(ValueError, match="not a creative-qa training checkpoint"):
        resolve_parent(str(bogus))


def test_a_run_from_a_parent_adopts_its_model_and_needs_a_mapping_for_another_taxonomy(parent, tmp_path):
    from training.warmstart import TaxonomyChange

    ckpt = tmp_path / "last.pt"
    parent_cfg = load_config("default", TINY_OVERRIDES)
    from training.checkpoint import Checkpoint
    from training.loop import spec_of

    Checkpoint.for_model(parent, parent_cfg, V1, spec_of(parent_cfg)).save(ckpt)

    cfg = load_config("default", [f"warm_start.parent={ckpt}", "data.taxonomy=v2", "model.input_size=96"])
    with pytest.raises(ValueError, match="give --mapping"):
        TaxonomyChange.create(cfg)
    cfg = load_config("default", [f"warm_start.parent={ckpt}", "data.mapping=v1_to_v2", "model.input_size=96"])
    change = TaxonomyChange.create(cfg)
    assert change.taxonomy.version == "2" and change.mapping.old.version == "1"
    assert cfg.model.input_size == parent_cfg.model.input_size == 64  # the weights only fit the parent's model
    # ... its views too: a parent with native-pixel crops has a wider head
    wide_cfg = load_config("default", [*TINY_OVERRIDES, "model.native_crops=2"])
    wide = build_model(wide_cfg.model, len(V1))
    Checkpoint.for_model(wide, wide_cfg, V1, spec_of(wide_cfg)).save(tmp_path / "wide.pt")
    cfg = load_config("default", [f"warm_start.parent={tmp_path / 'wide.pt'}"])
    TaxonomyChange.create(cfg)
    assert cfg.model.native_crops == 2 and spec_of(cfg).views == wide.views
    # ... and where its grid view reads: a parent from before the window moved to the edges read the
    # centre, and its pseudo-labels must come from the views it was trained on
    old_spec = Checkpoint.load(ckpt)
    old_spec.preprocess = {k: v for k, v in old_spec.preprocess.items() if k not in ("grid_region", "grid_window")}
    old_spec.save(tmp_path / "old.pt")
    cfg = load_config("default", [f"warm_start.parent={tmp_path / 'old.pt'}"])
    TaxonomyChange.create(cfg)
    assert (spec_of(cfg).grid_region, spec_of(cfg).grid_window) == (1024, "centre")
    assert (spec_of(parent_cfg).grid_region, spec_of(parent_cfg).grid_window) == (512, "edges")
    # a parent alone: continue in its taxonomy
    cfg = load_config("default", [f"warm_start.parent={ckpt}"])
    assert TaxonomyChange.create(cfg).mapping.is_identity
