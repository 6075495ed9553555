"""Defect synthesis claims a tag is 1: check each operation against the DESIGN.md threshold it claims,
measured on its output (not read back from its parameter)."""

import numpy as np
import pytest
import torch

from creative_qa.preprocess import PreprocessSpec, preprocess
from creative_qa.synth import SynthConfig, make_creative
from creative_qa.synth.defects import DEFECTS, to_pil
from creative_qa.taxonomy import load_taxonomy
from training.degrade import OPS, gaussian_blur, synthesize, view_scales

SPEC = PreprocessSpec(input_size=64, crops=3, detail_side=256)
TAGS = load_taxonomy().tag_names
W = torch.tensor([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def views() -> torch.Tensor:
    """Clean generated creatives as the model sees them: (N, V, S, S, 3) in [0, 1]."""
    out = []
    for i in range(12):
        c = make_creative(np.random.default_rng(i), SynthConfig(size=256), chosen={})
        out.append(preprocess(np.asarray(to_pil(c.image)), SPEC))
    return torch.from_numpy(np.stack(out)).float() / 255.0


def _apply(name: str, x: torch.Tensor, at: float) -> torch.Tensor:
    """The operation at the weakest setting it ever uses (``at`` = 0) or the strongest (1)."""
    op = OPS[name]
    g = torch.Generator().manual_seed(0)
    return op.fn(x, op.low + at * (op.high - op.low), view_scales(x.shape[0], x.shape[1], SPEC.detail_side), g)


@pytest.mark.parametrize("at", [0.0, 1.0])
def test_photometric_defects_cross_their_thresholds(views, at):
    for x in views:
        luma0 = x[0] @ W
        over = _apply("overexposed", x, at)[0] @ W
        assert DEFECTS["overexposed"].label(((over >= 0.98) & (luma0 < 0.98)).float().mean())
        under = _apply("underexposed", x, at)[0] @ W
        assert DEFECTS["underexposed"].label(under.mean() * 255)
        flat = _apply("low_contrast", x, at)[0] @ W
        assert DEFECTS["low_contrast"].label(flat.std() / luma0.std())


@pytest.mark.parametrize("at", [0.0, 1.0])
def test_noise_is_at_least_12_of_255_on_the_crops(views, at):
    for x in views:
        residual = _apply("noisy", x, at)[1:] - x[1:]
        unclipped = (x[1:] > 0.2) & (x[1:] < 0.8)  # clipping at 0 or 1 shrinks noise; measure where it cannot
        assert DEFECTS["noisy"].label(residual[unclipped].std())


def test_blur_sigma_is_at_least_0_6_percent_of_the_short_side():
    """The kernel's measured spread, on an impulse, at the weakest blur used, in crop pixels (short side 256)."""
    size = 129
    impulse = torch.zeros(1, 1, size, size)
    impulse[0, 0, size // 2, size // 2] = 1.0
    sigma = OPS["blurry"].low * SPEC.detail_side
    out = gaussian_blur(impulse, sigma)[0, 0]
    t = torch.arange(size, dtype=torch.float32) - size // 2
    measured = float(((out.sum(0) * t**2).sum() / out.sum()).sqrt())
    assert DEFECTS["blurry"].label(measured / SPEC.detail_side)
    assert measured == pytest.approx(sigma, rel=0.05)


def test_mosaic_blocks_are_at_least_2_percent_of_the_short_side():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 64, 64, 3, generator=g)
    out = _apply("pixelated", x, 0.0)[1]
    row = out[10, :, 0]
    runs = torch.diff(torch.nonzero(torch.diff(row) != 0).flatten())
    assert DEFECTS["pixelated"].label(runs.float().median() / SPEC.detail_side)


def test_upscaled_content_has_no_detail_above_its_source_resolution():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 64, 64, 3, generator=g)
    out = _apply("low_resolution", x, 0.0)[1, :, :, 0]
    spec = torch.fft.fft2(out - out.mean()).abs() ** 2
    f = torch.fft.fftfreq(64).abs()
    high = (f[:, None] > 0.5 / 3) | (f[None, :] > 0.5 / 3)  # above the Nyquist of a 3x smaller source
    assert spec[high].sum() / spec.sum() < 0.1
    spec0 = torch.fft.fft2(x[1, :, :, 0] - x[1, :, :, 0].mean()).abs() ** 2
    assert spec0[high].sum() / spec0.sum() > 0.5  # the source had it


def _dct_matrix(n: int = 8) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    m = torch.cos(torch.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * (2 / n) ** 0.5
    m[0] /= 2**0.5
    return m


def _ac01(luma: torch.Tensor) -> torch.Tensor:
    """The first horizontal AC coefficient of every 8x8 block, in JPEG's 0-255 units."""
    d = _dct_matrix()
    blocks = (luma.double() * 255 - 128).unfold(0, 8, 8).unfold(1, 8, 8).reshape(-1, 8, 8)
    return (d @ blocks @ d.T)[:, 0, 1]


def test_jpeg_copies_are_quantised_at_quality_20_or_coarser(views):
    """JPEG at quality q quantises the (0, 1) luma coefficient in steps of 11 * 50 / q (>= 27.5 at q <= 20):
    the copies have almost no such coefficient between the zero bin and the first step, the source has many."""

    def between(crops: list[torch.Tensor]) -> float:
        c = torch.cat([_ac01(v @ W).abs() for v in crops])
        return float(((c > 4) & (c < 22)).float().mean())

    # NOTE: pooled over every crop: a few blocks of saturated colour move off the grid when RGB clips.
    sources = [v for x in views for v in x[1:]]
    for at in (0.0, 1.0):
        copies = [v for x in views for v in _apply("jpeg_artifacts", x, at)[1:]]
        assert between(copies) < 0.025, at
    assert between(sources) > 0.05


def test_synthesize_labels_one_known_tag_and_leaves_the_rest_unknown(views):
    x = (views * 255).to(torch.uint8)
    out, labels = synthesize(x, TAGS, SPEC.detail_side, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == torch.uint8
    known = ~torch.isnan(labels)
    assert (known.sum(1) == 1).all()
    assert (labels[known] == 1).all()
    synthesised = {TAGS[j] for j in known.nonzero()[:, 1].tolist()}
    assert synthesised <= set(OPS)
    assert not (out == x).all(dim=(1, 2, 3, 4)).any()  # every copy changed


def test_with_a_grid_view_every_copy_keeps_its_sources_grid_view_and_jpeg_is_not_synthesised():
    spec = PreprocessSpec(input_size=64, crops=3, detail_side=256, grid_view=1)
    creatives = [make_creative(np.random.default_rng(i), SynthConfig(), chosen={}) for i in range(4)]
    x = torch.from_numpy(np.stack([preprocess(np.asarray(to_pil(c.image)), spec) for c in creatives]))
    g = torch.Generator().manual_seed(0)
    out, labels = synthesize(x, TAGS, spec.detail_side, g, grid_view=True)
    assert torch.equal(out[:, -1], x[:, -1])  # the signature is relative: the defects keep the source's
    assert not torch.equal(out[:, 1:-1], x[:, 1:-1])
    assert torch.isnan(labels[:, TAGS.index("jpeg_artifacts")]).all()
    with pytest.raises(ValueError, match="no synthesisable"):
        synthesize(x, TAGS, spec.detail_side, g, ops=("jpeg_artifacts",), grid_view=True)
    _, labels = synthesize(x, TAGS, spec.detail_side, g, ops=("jpeg_artifacts",))
    assert (labels[:, TAGS.index("jpeg_artifacts")] == 1).all()  # without a grid view it is


def test_a_copys_grid_profile_moves_with_its_defect_and_its_jpeg_numbers_stay():
    """A copy labeled ``low_resolution`` must not carry its sharp source's step profile (the model would
    learn to ignore the profile); the change its upscale (noise) makes to the crops' profile moves it."""
    spec = PreprocessSpec(input_size=64, crops=3, detail_side=256, grid_view=1)
    creatives = [make_creative(np.random.default_rng(i), SynthConfig(), chosen={}) for i in range(4)]
    x = torch.from_numpy(np.stack([preprocess(np.asarray(to_pil(c.image)), spec) for c in creatives]))
    profile = x[:, -1, 32, 32].int()
    for op, sign in (("low_resolution", 1), ("noisy", -1)):
        g = torch.Generator().manual_seed(0)
        out, _ = synthesize(x, TAGS, spec.detail_side, g, ops=(op,), grid_view=True, grid_profile=True)
        moved = out[:, -1, 32, 32].int()
        assert (sign * (moved[:, 0] - profile[:, 0]) > 10).all(), (op, profile, moved)
        assert torch.equal(out[:, -1, :16], x[:, -1, :16])  # the JPEG numbers (the outer ring) are the source's
        g = out[:, -1]
        assert torch.equal(g.flip(1), g) and torch.equal(g.rot90(1, dims=(1, 2)), g)  # still square rings
    g = torch.Generator().manual_seed(0)
    out, _ = synthesize(x, TAGS, spec.detail_side, g, ops=("low_resolution",), grid_view=True)
    assert torch.equal(out[:, -1], x[:, -1])  # a grid view without a profile keeps its source's, as before


def test_a_copy_shows_its_defect_as_a_creative_of_its_size_would():
    """Noise and an upscale happen at a creative's own pixels: a 1,080 px creative's 256 px crops show
    its noise a fourth as strong and a 3.5-6x upscale as one by at most 1.4 (their source has about as
    many pixels as the crop), where a 256 px creative's crops show both in full. The profile moves for both."""
    spec = PreprocessSpec(input_size=64, crops=3, detail_side=256, grid_view=1)
    x = {}
    for size in (256, 1080):
        c = make_creative(np.random.default_rng(3), SynthConfig(size=size), chosen={})
        x[size] = torch.from_numpy(preprocess(np.asarray(to_pil(c.image)), spec))[None]
    crops = slice(1, 4)
    for op in ("low_resolution", "noisy"):
        change, moved = {}, {}
        for size, views in x.items():
            out, _ = synthesize(views, TAGS, 256, torch.Generator().manual_seed(0), (op,), True, True)
            change[size] = (out[0, crops].float() - views[0, crops].float()).abs().mean().item()
            moved[size] = int(out[0, -1, 32, 32, 0]) - int(views[0, -1, 32, 32, 0])
        if op == "low_resolution":
            # the large creative's crops show an upscale by 0.8-1.4 (its source is 180-310 px), the small one's 3.5-6
            assert change[1080] < 0.4 * change[256], change
            assert moved[1080] > 10 and moved[256] > 10, moved  # ... its own pixels: ramps
        else:
            assert change[1080] < 0.4 * change[256], change
            assert moved[1080] < -10 and moved[256] < -10, moved


def test_every_synthesis_range_is_over_its_tags_threshold_at_both_ends():
    """The ranges are in the units of the tag's rule, whose threshold has one home (``DEFECTS``)."""
    for name, op in OPS.items():
        assert DEFECTS[name].label(op.low) and DEFECTS[name].label(op.high), name
