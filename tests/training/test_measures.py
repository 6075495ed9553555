"""The classical measurements the model reads next to its backbone's features (training.measures)."""

import numpy as np
import pytest
import torch

from training.measures import NAMES, measure, scaled

S = 64


def _texture(seed: int = 0, n: int = 1) -> torch.Tensor:
    """Smooth random texture, uint8 ``(n, S, S, 3)``: no two neighbours are exactly equal in a textured place."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, S // 4, S // 4, generator=g) * 200 + 20
    x = torch.nn.functional.interpolate(x, size=(S, S), mode="bicubic", align_corners=False)
    x = x + torch.rand(n, 3, S, S, generator=g) * 12  # fine grain: natural texture
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _values(whole: torch.Tensor, crops: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    m = measure(whole, crops).numpy()
    return {k: m[:, i] for i, k in enumerate(NAMES)}


def _letterbox(x: torch.Tensor, rows: int, colour=(0, 0, 0), sides: str = "both") -> torch.Tensor:
    out = x.clone()
    c = torch.tensor(colour, dtype=torch.uint8)
    if sides in ("both", "top"):
        out[:, :rows] = c
    if sides in ("both", "bottom"):
        out[:, S - rows :] = c
    return out


def test_bars_on_two_opposite_sides_give_their_share_in_any_orientation():
    x = _texture()
    boxed = _letterbox(x, 10)  # 20 of 64 rows
    assert _values(x)["bar_share"][0] == 0.0
    for view in (boxed, boxed.transpose(1, 2), torch.flip(boxed, dims=[1]), torch.rot90(boxed, 1, dims=(1, 2))):
        v = _values(view.contiguous())
        assert v["bar_share"][0] == pytest.approx(20 / 64)
        assert v["bar_side"][0] == pytest.approx(10 / 64)
    grey = _letterbox(x, 6, colour=(128, 128, 128))  # bars need not be black
    assert _values(grey)["bar_share"][0] == pytest.approx(12 / 64)
    one = _letterbox(x, 10, sides="top")  # one side only is not a letterbox, but it is a bar
    assert _values(one)["bar_share"][0] == 0.0 and _values(one)["bar_side"][0] == pytest.approx(10 / 64)
    uniform = torch.full((1, S, S, 3), 90, dtype=torch.uint8)  # all flat: no content between bars
    assert _values(uniform)["bar_share"][0] == 0.0
    noisy_bars = boxed.clone()
    noisy_bars[:, :10] = torch.randint(0, 60, (1, 10, S, 3), dtype=torch.uint8)  # grainy top: not uniform
    assert _values(noisy_bars)["bar_share"][0] == 0.0


def test_a_mosaic_is_flat_blocks_where_there_is_texture_and_noise_is_measured_in_grey_levels():
    x = _texture(1, n=2)
    blocks = x[:, ::8, ::8].repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)  # 8 px mosaic
    crops = torch.stack([x[[0, 0]], blocks[[1, 1]]])  # (2 creatives, 2 crops, S, S, 3): natural, pixelated
    natural, mosaic = _values(x, crops)["mosaic"]
    assert natural < 0.2 and mosaic > 0.6
    ramp = torch.linspace(40, 200, S).view(1, 1, S, 1).expand(1, S, S, 3)
    g = torch.Generator().manual_seed(2)
    for sigma in (4.0, 12.0):
        noisy = (ramp + torch.randn(1, S, S, 1, generator=g) * sigma).clamp(0, 255).round().to(torch.uint8)
        est = _values(noisy.expand(1, S, S, 3).contiguous())["noise"][0]
        assert est == pytest.approx(sigma, rel=0.2)


def test_every_measurement_is_the_same_for_every_flip_and_rotation_of_the_views():
    whole = _letterbox(_texture(6), 9)
    crops = _texture(7).unsqueeze(1).repeat(1, 2, 1, 1, 1)
    crops[:, 0, 20:24, 8:56] = 255  # a line of "text": strong edges along a row
    crops[:, 0, 21:23, 8:56:4] = 0
    crops[:, 1] = crops[:, 1][:, ::4, ::4].repeat_interleave(4, 1).repeat_interleave(4, 2)  # a mosaic
    base = measure(whole, crops)
    assert base[0, NAMES.index("text_edges")] > 0 and base[0, NAMES.index("bar_share_strict")] > 0
    for k in (1, 2, 3):
        for flip in (False, True):
            w = torch.rot90(whole, k, dims=(1, 2))
            c = torch.rot90(crops, k, dims=(2, 3))
            if flip:
                w, c = torch.flip(w, dims=[2]), torch.flip(c, dims=[3])
            torch.testing.assert_close(measure(w.contiguous(), c.contiguous()), base, rtol=1e-5, atol=1e-4)


def test_the_strict_bar_tolerance_ignores_grain_the_loose_one_takes_for_flat():
    x = _texture(8)
    boxed = _letterbox(x, 10, colour=(60, 60, 60))
    grain = boxed.clone()
    grain[:, :10] += torch.randint(0, 4, (1, 10, S, 3), dtype=torch.uint8)  # a dim, grainy band: not a bar
    grain[:, S - 10 :] += torch.randint(0, 4, (1, 10, S, 3), dtype=torch.uint8)
    v, w = _values(boxed), _values(grain)
    assert v["bar_share_strict"][0] == pytest.approx(20 / 64) == v["bar_share"][0]
    assert w["bar_share"][0] == pytest.approx(20 / 64) and w["bar_share_strict"][0] == 0.0
    bright = torch.full((1, S, S, 3), 230, dtype=torch.uint8)  # bright flat rows: exactly zero spread
    bright[:, 12:52] = _texture(9)[:, 12:52]
    assert _values(bright)["bar_share_strict"][0] == pytest.approx(24 / 64)


def test_exposure_numbers_and_their_scaling():
    dark = torch.full((1, S, S, 3), 20, dtype=torch.uint8)
    white = torch.full((1, S, S, 3), 255, dtype=torch.uint8)
    v = _values(torch.cat([dark, white]))
    np.testing.assert_allclose(v["luma_mean"], [20, 255], atol=0.01)
    np.testing.assert_allclose(v["clipped"], [0, 1])
    np.testing.assert_allclose(v["luma_spread"], [0, 0], atol=0.01)
    s = scaled(measure(torch.cat([dark, white]), None))
    assert s.shape == (2, len(NAMES)) and s.abs().max() < 5  # about unit range


def test_the_model_reads_the_measurements_of_its_whole_view_and_detail_crops():
    from training.model import MEASURE_HIDDEN, CreativeModel

    torch.manual_seed(0)
    plain = CreativeModel("test_resnet", num_tags=3, views=4, grid_view=True, crops=2)
    model = CreativeModel("test_resnet", num_tags=3, views=4, grid_view=True, measures=True, crops=2).eval()
    assert model.tag_head.in_features == plain.tag_head.in_features + len(NAMES) + MEASURE_HIDDEN
    x = torch.cat([_texture(3).unsqueeze(1)] * 4, dim=1)  # (1, 4 views, S, S, 3)
    x[:, -1] = torch.tensor([64, 128, 128], dtype=torch.uint8)
    boxed = x.clone()
    boxed[:, 0] = _letterbox(x[:, 0], 10)
    with torch.no_grad():
        f, g = model.features(x), model.features(boxed)
        n = len(NAMES) + MEASURE_HIDDEN
        i = NAMES.index("bar_share")
        assert f[0, -n + i] < g[0, -n + i]  # the bars are read off the whole view
        assert not torch.allclose(model(x)[0], model(boxed)[0])
        assert model.features(x[:, :1]).shape[1] == model.backbone.num_features  # a single window: none


def test_a_checkpoint_from_before_the_measurements_loads_without_them():
    from creative_qa.taxonomy import load_taxonomy
    from tests.conftest import TINY_OVERRIDES
    from training.checkpoint import Checkpoint
    from training.config import load_config
    from training.loop import spec_of
    from training.model import build_model, model_from_checkpoint

    cfg = load_config("default", [*TINY_OVERRIDES, "model.measures=0"])
    model = build_model(cfg.model, len(load_taxonomy()))
    ckpt = Checkpoint.for_model(model, cfg, load_taxonomy(), spec_of(cfg))
    del ckpt.config["model"]["measures"]  # today's default is 1: the old head would not fit it
    loaded = model_from_checkpoint(ckpt)
    assert not loaded.measures and loaded.measure_mlp is None
    assert torch.equal(loaded.tag_head.weight, model.tag_head.weight)
    on = load_config("default", list(TINY_OVERRIDES))
    assert on.model.measures == 1 and build_model(on.model, 3).measures
