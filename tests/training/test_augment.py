"""Every augmentation preserves every tag: measured on generated creatives with known labels."""

import numpy as np
import pytest
import torch

from creative_qa.preprocess import PreprocessSpec, preprocess
from creative_qa.synth import DEFECTS, SynthConfig, make_creative
from creative_qa.synth.defects import to_pil
from training.augment import hflip, rot90, strong, vflip, view_shuffle_crops, weak

AUGMENTATIONS = {
    "hflip": lambda x: hflip(x, p=1.0),
    "vflip": lambda x: vflip(x, p=1.0),
    "rot90": rot90,
    "view_shuffle_crops": view_shuffle_crops,
    "weak": weak,
    "strong": strong,
}
W = np.array([0.299, 0.587, 0.114])


def _measures(views: np.ndarray) -> dict[str, float]:
    """Label-relevant statistics of a creative's views (all invariant to where pixels sit)."""
    v = views.astype(np.float64)
    luma = v @ W  # (V, S, S)
    lap = np.abs(
        4 * luma[:, 1:-1, 1:-1] - luma[:, :-2, 1:-1] - luma[:, 2:, 1:-1] - luma[:, 1:-1, :-2] - luma[:, 1:-1, 2:]
    )
    whole = luma[0]
    return {
        "mean_luma": luma.mean(),  # underexposed
        "luma_std": luma.std(),  # low_contrast
        "near_white": (luma >= 0.98 * 255).mean(),  # overexposed
        "high_freq": lap.mean(),  # blur, noise, JPEG, mosaic, upscaling
        "bar_rows": float(np.sort([whole[:3].std(), whole[-3:].std()]).sum()),  # top/bottom letterbox
        "bar_cols": float(np.sort([whole[:, :3].std(), whole[:, -3:].std()]).sum()),  # left/right letterbox
    }


@pytest.fixture(scope="module")
def creatives():
    spec = PreprocessSpec(input_size=64, crops=2, detail_side=128)
    out = []
    for i, chosen in enumerate(
        [
            {},
            {"letterboxed": 0.25},
            {"blurry": 0.015},
            {"noisy": 0.1},
            {"underexposed": 40.0},
            {"low_contrast": 0.2},
            {"overexposed": 0.5},
            {"jpeg_artifacts": 8},
            {"pixelated": 0.04},
            {"watermark": 0.4},
        ]
    ):
        c = make_creative(np.random.default_rng(i), SynthConfig(size=128), chosen=chosen)
        views = preprocess(np.asarray(to_pil(c.image)), spec)
        out.append((chosen, c.labels, views))
    return out


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augmentation_keeps_every_label_statistic(name, creatives):
    torch.manual_seed(0)
    for chosen, labels, views in creatives:
        before = _measures(views)
        after_views = AUGMENTATIONS[name](torch.from_numpy(views[None]))[0].numpy()
        after = _measures(after_views)
        for k in ("mean_luma", "luma_std", "high_freq"):
            assert after[k] == pytest.approx(before[k], rel=0.02, abs=0.6), (name, chosen, k)
        assert after["near_white"] == pytest.approx(before["near_white"], abs=0.01), (name, chosen)
        # bars stay uniform bars on a pair of opposite sides (rot90 may turn rows into columns)
        assert sorted([after["bar_rows"], after["bar_cols"]]) == pytest.approx(
            sorted([before["bar_rows"], before["bar_cols"]]), abs=1.0
        ), (name, chosen)
        # and the creative really was what it claims
        for d in chosen:
            assert labels[d] == 1 and d in DEFECTS


def test_strong_view_differs_from_the_input(creatives):
    torch.manual_seed(1)
    views = torch.from_numpy(np.stack([c[2] for c in creatives]))
    assert not torch.equal(strong(views), views)
