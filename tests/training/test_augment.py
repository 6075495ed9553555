"""Every augmentation preserves every tag: measured on generated creatives just above and just below
each defect's threshold, where a label-changing operation would show."""

import numpy as np
import pytest
import torch

from creative_qa.preprocess import PreprocessSpec, preprocess
from creative_qa.synth import DEFECTS, SynthConfig, make_creative
from creative_qa.synth.defects import to_pil
from training.augment import hflip, per_view, resample_crops, rot90, strong, vflip, view_shuffle_crops, weak

POOL = 3
SPEC = PreprocessSpec(input_size=64, crops=2, detail_side=128)
AUGMENTATIONS = {
    "hflip": lambda x, pool: hflip(x, p=1.0),
    "vflip": lambda x, pool: vflip(x, p=1.0),
    "rot90": lambda x, pool: rot90(x),
    "view_shuffle_crops": lambda x, pool: view_shuffle_crops(x),
    "per_view_flips_rot90": lambda x, pool: per_view(lambda v: rot90(vflip(hflip(v))), x),
    "weak": lambda x, pool: weak(x),
    "strong": strong,
}
W = np.array([0.299, 0.587, 0.114])


def _measures(views: np.ndarray) -> dict[str, float]:
    """Label-relevant statistics of a set of windows (all invariant to where pixels sit inside a window)."""
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


def _near_threshold_cases() -> list[dict[str, float]]:
    """Each defect at 1.1x and 0.9x of its threshold (in the direction that crosses it), plus a clean one."""
    cases: list[dict[str, float]] = [{}]
    for name, d in DEFECTS.items():
        above, below = (1.1, 0.9) if d.worse_above else (0.9, 1.1)
        cases += [{name: d.threshold * above}, {name: d.threshold * below}]
    return cases


@pytest.fixture(scope="module")
def creatives():
    """(chosen, labels, served views + crop pool) per creative."""
    out = []
    for i, chosen in enumerate(_near_threshold_cases()):
        # NOTE: a defect aimed just past its threshold can land on the other side on some designs (a
        # flat area at the clipping level clips whole): the next design is drawn until it lands where aimed.
        for k in range(8):
            c = make_creative(np.random.default_rng([i, k]), SynthConfig(size=128), chosen=chosen)
            if all(c.labels[name] == DEFECTS[name].label(aim) for name, aim in chosen.items()):
                break
        else:
            pytest.fail(f"no design of 8 lands {chosen} on the side it aims at")
        out.append((chosen, c.labels, preprocess(np.asarray(to_pil(c.image)), SPEC, pool=POOL)))
    return out


def test_fixture_straddles_every_threshold(creatives):
    """The cases really sit on both sides of each threshold, so a label-changing operation would show."""
    for name in DEFECTS:
        got = sorted(labels[name] for chosen, labels, _ in creatives if set(chosen) == {name})
        assert got == [0, 1], name


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augmentation_keeps_every_label_statistic(name, creatives):
    """Operations on the served views: the statistics that decide each label stay where they were."""
    torch.manual_seed(0)
    v = SPEC.views
    for chosen, _, allviews in creatives:
        views = allviews[:v]
        before = _measures(views)
        x = torch.from_numpy(views[None])
        after_views = AUGMENTATIONS[name](x, torch.zeros((1, 0, *x.shape[2:]), dtype=torch.uint8))[0].numpy()
        after = _measures(after_views)
        for k in ("mean_luma", "luma_std", "high_freq"):
            assert after[k] == pytest.approx(before[k], rel=0.02, abs=0.6), (name, chosen, k)
        assert after["near_white"] == pytest.approx(before["near_white"], abs=0.01), (name, chosen)
        # bars stay uniform bars on a pair of opposite sides (rot90 may turn rows into columns)
        assert sorted([after["bar_rows"], after["bar_cols"]]) == pytest.approx(
            sorted([before["bar_rows"], before["bar_cols"]]), abs=1.0
        ), (name, chosen)


def _signature(window: np.ndarray) -> bytes:
    """What a flip or a 90-degree rotation cannot change: the window's sorted pixels."""
    return np.sort(window.reshape(-1, 3), axis=0).tobytes()


def test_strong_view_is_windows_of_the_same_creative(creatives):
    """Every view of the strong view is one of the creative's own windows (same scale), flipped or rotated:
    the whole view stays the whole creative, and each crop is a served crop or a pool window."""
    torch.manual_seed(2)
    v = SPEC.views
    for chosen, _, allviews in creatives:
        x = torch.from_numpy(allviews[None, :v])
        pool = torch.from_numpy(allviews[None, v:])
        out = strong(x, pool)[0].numpy()
        assert out.shape == allviews[:v].shape
        assert _signature(out[0]) == _signature(allviews[0]), chosen
        windows = {_signature(w) for w in allviews[1:]}
        assert all(_signature(w) in windows for w in out[1:]), chosen


def test_pool_windows_follow_the_served_crops():
    """The crop pool extends the served crops: the first V views are exactly what the scorer sees."""
    c = make_creative(np.random.default_rng(7), SynthConfig(size=200), chosen={"noisy": 0.1})
    pixels = np.asarray(to_pil(c.image))
    served = preprocess(pixels, SPEC)
    with_pool = preprocess(pixels, SPEC, pool=POOL)
    assert with_pool.shape[0] == SPEC.views + POOL
    np.testing.assert_array_equal(with_pool[: SPEC.views], served)
    assert not any(np.array_equal(with_pool[SPEC.views], w) for w in served[1:])


def test_resample_draws_from_the_pool_and_per_view_ops_are_independent():
    n, s = 64, 8
    images = torch.zeros((n, 3, s, s, 3), dtype=torch.uint8)
    images[:, 1], images[:, 2] = 1, 2
    pool = torch.full((n, 2, s, s, 3), 3, dtype=torch.uint8)
    pool[:, 1] = 4
    torch.manual_seed(0)
    out = resample_crops(images, pool)
    assert (out[:, 0] == 0).all()  # the whole view stays
    picked = out[:, 1:, 0, 0, 0]
    assert set(picked.unique().tolist()) == {1, 2, 3, 4}  # every candidate window gets drawn
    assert (picked[:, 0] != picked[:, 1]).all()  # two different windows per creative
    # per-view rotations: views of one creative are rotated independently
    ramp = torch.arange(s * s, dtype=torch.uint8).view(1, 1, s, s, 1).expand(n, 3, s, s, 3).contiguous()
    rotated = per_view(rot90, ramp)
    same = [torch.equal(rotated[i, 0], rotated[i, 1]) and torch.equal(rotated[i, 1], rotated[i, 2]) for i in range(n)]
    assert not all(same)


def test_strong_view_differs_from_the_weak_one(creatives):
    torch.manual_seed(1)
    v = SPEC.views
    allviews = torch.from_numpy(np.stack([c[2] for c in creatives]))
    views, pool = allviews[:, :v], allviews[:, v:]
    out = strong(views, pool)
    changed = (out[:, 1:] != views[:, 1:]).flatten(2).any(-1).float().mean()
    assert changed > 0.5  # most detail crops are different windows or orientations


def test_native_crops_keep_their_role_under_every_augmentation():
    from types import SimpleNamespace

    from torch import nn

    from training.augment import detail_windows
    from training.methods.base import Method

    # Views tagged by value: whole 0, detail crops 1-3, native crops 10-11; pool windows 20-21.
    n, tags, pool_tags = 64, [0, 1, 2, 3, 10, 11], [20, 21]
    images = torch.tensor(tags, dtype=torch.uint8).view(1, 6, 1, 1, 1).expand(n, 6, 4, 4, 3).contiguous()
    pool = torch.tensor(pool_tags, dtype=torch.uint8).view(1, 2, 1, 1, 1).expand(n, 2, 4, 4, 3).contiguous()
    method = Method(nn.Identity())
    method.spec = SimpleNamespace(native_crops=1, grid_view=True)  # a method knows its run's views: 2 kept in place
    assert method.native_views == 2
    for out in (
        weak(images, native=2), strong(images, pool, native=2), resample_crops(images, pool, native=2),
        view_shuffle_crops(images, native=2), method.weak(images), method.strong(images, pool),
    ):  # fmt: skip
        got = out[:, :, 0, 0, 0]
        assert (got[:, 0] == 0).all()
        assert set(got[:, 1:4].unique().tolist()) <= {1, 2, 3, 20, 21}  # detail crops: detail windows only
        assert (got[:, 4:] == torch.tensor([10, 11], dtype=torch.uint8)).all()  # in place: edge, smooth
    assert set(detail_windows(images, pool, native=2)[:, :, 0, 0, 0].unique().tolist()) == {1, 2, 3, 20, 21}
    # without native views every crop is a detail crop (the default layout, and a method before its run sets a spec)
    assert Method(nn.Identity()).native_views == 0
    assert any((weak(images)[:, 1:4, 0, 0, 0] >= 10).any() for _ in range(20))
    assert set(detail_windows(images, None)[:, :, 0, 0, 0].unique().tolist()) == {1, 2, 3, 10, 11}
