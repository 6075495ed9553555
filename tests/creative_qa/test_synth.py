"""The generator's labels follow DESIGN.md's definitions exactly, at the boundary."""

import json

import numpy as np
import pandas as pd
import pytest

from creative_qa.synth import DEFECTS, SynthConfig, generate_dataset, make_creative, render_design
from creative_qa.synth.defects import TEXT_HEAVY_THRESHOLD, luma, to_pil
from creative_qa.taxonomy import load_taxonomy

# Control values just under and just over each rule's threshold.
BOUNDARY = {
    "blurry": (0.0055, 0.0066),
    "low_resolution": (2.8, 3.2),
    "jpeg_artifacts": (22, 19),
    "noisy": (11 / 255, 13 / 255),
    "overexposed": (0.2, 0.32),
    "underexposed": (66.0, 55.0),
    "low_contrast": (0.38, 0.32),
    "letterboxed": (0.10, 0.14),
    "watermark": (0.13, 0.17),
    "pixelated": (0.016, 0.024),
}


@pytest.fixture(scope="module")
def design():
    return render_design(np.random.default_rng(5), 256, aspect="1:1", backgrounds=("gradient",)).image


@pytest.mark.parametrize("name", sorted(BOUNDARY))
def test_label_flips_at_the_threshold(design, name):
    d = DEFECTS[name]
    below, above = BOUNDARY[name]
    _, m_below = d.apply(design.copy(), below, np.random.default_rng(0), {})
    _, m_above = d.apply(design.copy(), above, np.random.default_rng(0), {})
    assert d.label(m_below) == 0, f"{name}: {m_below} should be under the threshold {d.threshold}"
    assert d.label(m_above) == 1, f"{name}: {m_above} should be over the threshold {d.threshold}"


# --- the label's quantity, measured on the output pixels (not read back from the control value) ----------


def _line_spread(out: np.ndarray, col: int) -> float:
    """Standard deviation, in pixels, of the horizontal profile of a blurred one-pixel vertical line."""
    profile = np.clip(luma(out)[out.shape[0] // 2], 0, None)
    t = np.arange(len(profile)) - col
    return float(np.sqrt((profile * t**2).sum() / profile.sum()))


def _line(size: int = 256) -> np.ndarray:
    img = np.zeros((size, size, 3), np.float32)
    img[:, size // 2] = 1.0
    return img


def test_a_gaussian_blur_spreads_a_line_by_sigma_and_crosses_the_threshold_where_labelled():
    d = DEFECTS["blurry"]
    for k in (*BOUNDARY["blurry"], 0.012, 0.02):
        out, _ = d.apply(_line(), k, np.random.default_rng(0), {"blur_kernel": "gaussian"})
        sigma = _line_spread(out, 128) / 256  # as a share of the short side, the rule's unit
        assert sigma == pytest.approx(k, rel=0.05)
    below, above = (
        _line_spread(d.apply(_line(), k, np.random.default_rng(0), {"blur_kernel": "gaussian"})[0], 128) / 256
        for k in BOUNDARY["blurry"]
    )
    assert below < d.threshold <= above


@pytest.mark.parametrize("kernel", ["gaussian", "box", "motion"])
def test_every_blur_kernel_removes_fine_detail_more_as_sigma_grows(design, kernel):
    d = DEFECTS["blurry"]
    rng = np.random.default_rng
    detail = [
        fine_detail(to_pil(d.apply(design.copy(), k, rng(0), {"blur_kernel": kernel})[0])) / fine_detail(to_pil(design))
        for k in (0.0066, 0.012, 0.02)
    ]
    assert detail[0] < 0.5, detail  # a blur at the threshold already removes most of the detail
    assert detail[0] > detail[1] > detail[2], detail
    # a box or motion kernel is as wide as its sigma says (to the rounding of its whole-pixel size)
    if kernel == "box":
        out, _ = d.apply(_line(), 0.012, rng(0), {"blur_kernel": kernel})
        assert _line_spread(out, 128) / 256 == pytest.approx(0.012, rel=0.1)


def test_a_box_blur_is_labelled_by_its_realised_sigma():
    """A box kernel comes in whole pixels: just over the threshold asked, the box realised may be under it;
    the label follows the pixels (the line's measured spread), not the value asked for."""
    d = DEFECTS["blurry"]
    labels = []
    for asked in np.linspace(0.0058, 0.0072, 8):
        out, k = d.apply(_line(), asked, np.random.default_rng(0), {"blur_kernel": "box"})
        spread = _line_spread(out, 128) / 256
        assert k == pytest.approx(spread, rel=0.05), (asked, k, spread)
        labels.append(d.label(k))
        assert d.label(k) == int(spread >= d.threshold * 1.02) or abs(spread - d.threshold) < 0.02 * d.threshold
    assert 0 in labels and 1 in labels  # the sweep crosses the threshold


def _dct8() -> np.ndarray:
    k = np.arange(8)
    m = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / 16) * np.sqrt(2 / 8)
    m[0] /= np.sqrt(2)
    return m


def jpeg_step(x: np.ndarray, tol: float = 1.0) -> tuple[float, float]:
    """The quantisation step of the first horizontal AC coefficient of the luma's 8x8 blocks, read off the
    pixels: the step (20-40, JPEG's 0-255 units) whose multiples the coefficients sit on, and the share that do.

    libjpeg's step for that coefficient is 11 x 50 / q (rounded) below quality 50: 28 at q=20, 26 at q=21."""
    d = _dct8()
    y = luma(x) * 255 - 128
    h, w = y.shape[0] // 8 * 8, y.shape[1] // 8 * 8
    blocks = y[:h, :w].reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
    c = (d @ blocks @ d.T)[:, 0, 1]
    c = c[np.abs(c) > 10]  # the zero bin tells nothing about the step
    steps = np.arange(20, 40.01, 0.25)
    share = [float((np.abs(c / s - np.round(c / s)) * s < tol).mean()) for s in steps]
    best = int(np.argmax(share))
    return float(steps[best]), share[best]


@pytest.mark.parametrize("seed", [0, 1])  # the draw picks 4:4:4 or 4:2:0 chroma
def test_jpeg_quality_is_read_off_the_quantisation_grid_of_the_pixels(design, seed):
    d = DEFECTS["jpeg_artifacts"]
    _, source_share = jpeg_step(design)
    for q in (19, 20, 21, 22):
        out, _ = d.apply(design.copy(), q, np.random.default_rng(seed), {})
        step, share = jpeg_step(out)
        assert step == round(11 * 50 / q), (q, step)
        assert (step >= 27) == (q <= d.threshold), (q, step)  # quality <= 20 <=> a step of 28 or more
        assert share > 2 * source_share, (q, share, source_share)  # the source sits on no such grid
    # the mild range (quality 40-85) keeps the fine detail a q=19 copy loses
    fine = [fine_detail(to_pil(d.apply(design.copy(), q, np.random.default_rng(seed), {})[0])) for q in (85, 19)]
    assert fine[0] > fine[1]


@pytest.mark.parametrize("kind", ["gaussian", "uniform", "chroma"])
def test_noise_std_is_measured_on_the_pixels(design, kind):
    d = DEFECTS["noisy"]
    unclipped = (design > 0.2) & (design < 0.8)  # clipping at 0 or 1 shrinks noise: measure where it cannot
    measured = []
    for std in BOUNDARY["noisy"]:
        out, _ = d.apply(design.copy(), std, np.random.default_rng(0), {"noise_kind": kind})
        measured.append(float((out - design)[unclipped].std()))
        assert measured[-1] == pytest.approx(std, rel=0.03)
    assert measured[0] < d.threshold <= measured[1]


def test_an_upscale_leaves_no_detail_above_its_source_resolution():
    """On white noise (detail at every frequency), the share of energy above the Nyquist frequency of a
    3x smaller source: near none after a 3x or larger upscale, much more under 3x."""
    noise = np.random.default_rng(0).random((256, 256, 3)).astype(np.float32)
    f = np.abs(np.fft.fftfreq(256))
    high = (f[:, None] > 0.5 / 3) | (f[None, :] > 0.5 / 3)

    def share(img: np.ndarray) -> float:
        power = np.abs(np.fft.fft2(luma(img) - luma(img).mean())) ** 2
        return float(power[high].sum() / power.sum())

    d = DEFECTS["low_resolution"]
    below, above = BOUNDARY["low_resolution"]
    assert share(noise) > 0.8
    for seed in range(6):  # the draw picks the upsampling filter
        assert share(d.apply(noise.copy(), below, np.random.default_rng(seed), {})[0]) > 0.09
        assert share(d.apply(noise.copy(), above, np.random.default_rng(seed), {})[0]) < 0.09
        assert share(d.apply(noise.copy(), d.positive[1], np.random.default_rng(seed), {})[0]) < 0.02


def test_a_watermark_blends_a_mark_at_its_alpha():
    """On a flat grey equally far from both mark colours (white, dark grey 0.15), the largest change is alpha x
    that distance: where the mark is solid, out = (1 - alpha) x + alpha x colour."""
    d = DEFECTS["watermark"]
    grey = np.full((256, 256, 3), 0.575, np.float32)
    for seed in range(4):
        measured = []
        for alpha in BOUNDARY["watermark"]:
            out, _ = d.apply(grey.copy(), alpha, np.random.default_rng(seed), {})
            blend = np.abs(out - grey).max(axis=2) / 0.425
            measured.append(float(blend.max()))
            assert measured[-1] == pytest.approx(alpha, abs=2e-3)
            assert (blend > alpha / 2).mean() > 0.02  # a mark over the design, not a speck
        assert measured[0] < d.threshold <= measured[1]


def test_a_watermark_on_a_design_changes_a_region_by_no_more_than_alpha(design):
    out, alpha = DEFECTS["watermark"].apply(design.copy(), 0.3, np.random.default_rng(0), {})
    change = np.abs(out - design).max(axis=2)
    assert change.max() <= alpha + 1e-6
    assert (change > 0.05).mean() > 0.02


def test_defect_changes_the_pixels_as_described(design):
    dark, mean = DEFECTS["underexposed"].apply(design.copy(), 40.0, np.random.default_rng(0), {})
    assert abs(luma(dark).mean() * 255 - mean) < 1e-3
    assert mean <= 60
    flat, ratio = DEFECTS["low_contrast"].apply(design.copy(), 0.3, np.random.default_rng(0), {})
    assert luma(flat).std() < 0.36 * luma(design).std()
    bars, frac = DEFECTS["letterboxed"].apply(design.copy(), 0.2, np.random.default_rng(1), {})
    assert frac >= 0.12
    # the bars are uniform
    h, w = bars.shape[:2]
    edge = (
        np.concatenate([bars[:2].reshape(-1, 3), bars[-2:].reshape(-1, 3)])
        if bars[0].std() < 1e-6
        else np.concatenate([bars[:, :2].reshape(-1, 3), bars[:, -2:].reshape(-1, 3)])
    )
    assert edge.std(axis=0).max() < 1e-6


def test_text_heavy_is_measured_coverage():
    rng = np.random.default_rng(11)
    heavy = render_design(rng, 256, text_heavy=True)
    assert heavy.text_coverage >= TEXT_HEAVY_THRESHOLD and heavy.labels["text_heavy"] == 1
    light = render_design(np.random.default_rng(12), 256, text_heavy=False)
    assert light.labels["text_heavy"] == int(light.text_coverage >= TEXT_HEAVY_THRESHOLD)


def test_quality_falls_with_defects():
    cfg = SynthConfig(p_clean=1.0)
    clean = make_creative(np.random.default_rng(1), cfg)
    assert clean.quality == 1.0 and not any(clean.labels[n] for n in DEFECTS)
    bad = make_creative(np.random.default_rng(1), cfg, chosen={"blurry": 0.015, "noisy": 0.1})
    assert bad.labels["blurry"] == 1 and bad.labels["noisy"] == 1
    assert bad.quality < 0.6


def test_dataset_is_deterministic_and_noisy_labels_differ(tmp_path):
    cfg = SynthConfig(size=96, video_frac=0.0)
    kw = dict(n_labeled=40, n_unlabeled=5, n_test=10, seed=1, cfg=cfg, progress=False, miss_rate=0.5, blank_rate=0.2)
    a = generate_dataset(tmp_path / "a", workers=1, **kw)
    b = generate_dataset(tmp_path / "b", workers=2, **kw)
    for key in ("train_labeled", "test", "unlabeled"):
        assert a[key].read_text() == b[key].read_text()
    noisy = pd.read_csv(a["train_labeled"])
    clean = pd.read_csv(a["train_labeled_clean"])
    tags = load_taxonomy().tag_names
    assert noisy[tags].isna().to_numpy().mean() > 0.1  # blanks stay blank
    assert clean[tags].isna().to_numpy().sum() == 0
    known = noisy[tags].notna().to_numpy()
    # missed positives: the noisy set has fewer positives than the truth
    assert noisy[tags].to_numpy()[known].sum() < clean[tags].to_numpy()[known].sum()
    assert (tmp_path / "a" / noisy["path"].iloc[0]).is_file()
    assert list(pd.read_csv(a["unlabeled"]).columns) == ["path"]


def test_videos_keep_the_split_fonts_and_backgrounds(monkeypatch):
    """A held-out font must not leak into the training pool through its videos."""
    from creative_qa.synth import generate

    seen = []
    real = generate.render_design

    def spy(*args, **kwargs):
        seen.append((kwargs.get("fonts"), kwargs.get("backgrounds")))
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "render_design", spy)
    cfg = SynthConfig(size=64, fonts=("cmr10.ttf",), backgrounds=("flat",), video_seconds=0.5, video_fps=8)
    generate.make_video(np.random.default_rng(0), cfg)
    assert seen == [(("cmr10.ttf",), ("flat",))]


def test_a_size_spread_changes_each_stills_size_not_its_design_or_labels(tmp_path):
    from PIL import Image

    kw = dict(n_labeled=24, n_unlabeled=0, n_test=0, seed=3, progress=False, workers=1)
    fixed = generate_dataset(tmp_path / "fixed", cfg=SynthConfig(size=128, video_frac=0.0), **kw)
    spread = generate_dataset(tmp_path / "spread", cfg=SynthConfig(size=128, size_max=320, video_frac=0.0), **kw)
    a, b = pd.read_csv(fixed["train_labeled_clean"]), pd.read_csv(spread["train_labeled_clean"])
    tags = load_taxonomy().tag_names
    # Scale-relative and native defects are defined so a creative's truth does not depend on its
    # size: the same draws give the same defects and labels, but for rounding to whole pixels at a
    # threshold (a different design would change about a fifth of them). The design's parts and the
    # defects draw from separate streams, so text that fits at one size and not another cannot
    # change which defects a creative gets.
    assert [json.loads(x).keys() for x in a["defects"]] == [json.loads(x).keys() for x in b["defects"]]
    assert (a[tags].to_numpy() != b[tags].to_numpy()).mean() < 0.01
    shorts = [min(Image.open(tmp_path / "spread" / p).size) for p in b["path"]]
    assert all(128 <= s <= 320 for s in shorts) and len(set(shorts)) > 8
    assert {min(Image.open(tmp_path / "fixed" / p).size) for p in a["path"]} == {128}


def fine_detail(img) -> float:
    """Mean absolute Laplacian of the luma: what an upscale removes first."""
    y = np.asarray(img.convert("L"), np.float32)
    return float(np.abs(4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]).mean())


def test_a_clean_large_creative_s_photo_background_is_not_an_upscaled_one():
    """`low_resolution` means content upscaled >= 3x: the 427 x 640 px photos covering a 1,080 px
    creative by scaling alone were enlarged 2.5-3.5x on creatives labelled clean. Past
    PHOTO_MAX_UPSCALE they are mirror-tiled, so a large background keeps its fine detail."""
    from creative_qa.synth import render

    def median_detail(size: int) -> float:
        return float(
            np.median(
                [
                    fine_detail(render._background(np.random.default_rng(s), size, size, ("photo",))[0])
                    for s in range(12)
                ]
            )
        )

    # At 512 px the photos are enlarged at most PHOTO_MAX_UPSCALE; at 1,080 px they must not lose
    # much more detail than that (scaling alone kept under a third of it).
    assert median_detail(1080) > 0.5 * median_detail(512)
    img, kind = render._background(np.random.default_rng(0), 1080, 1350, ("photo",))
    assert kind == "photo" and img.size == (1080, 1350)


def test_cached_data_from_an_older_generator_is_made_again(tmp_path):
    """The demo reuses its data set only when the generator that made it is this one."""
    import json

    from training.cli import _synth_demo_data

    first = _synth_demo_data(tmp_path, n_labeled=4, n_unlabeled=0, n_test=2)
    stamp = first["test"].stat().st_mtime_ns
    assert _synth_demo_data(tmp_path, n_labeled=4, n_unlabeled=0, n_test=2)["test"].stat().st_mtime_ns == stamp
    meta = json.loads((tmp_path / "synth.json").read_text())
    (tmp_path / "synth.json").write_text(json.dumps(meta | {"synth_version": meta["synth_version"] - 1}))
    assert _synth_demo_data(tmp_path, n_labeled=4, n_unlabeled=0, n_test=2)["test"].stat().st_mtime_ns != stamp


def test_an_overexposure_reaches_the_clipped_share_it_aims_at_on_any_design():
    """Gain alone never clips a saturated colour to white (its other channels stay low): a creative
    meant to be overexposed came out nearly unclipped and labelled clean. Highlights now wash to white."""
    over = DEFECTS["overexposed"]
    designs = [render_design(np.random.default_rng(s), 128).image for s in range(8)]
    aimed_over = [over.label(over.apply(d.copy(), 0.32, np.random.default_rng(0), {})[1]) for d in designs]
    aimed_mild = [over.label(over.apply(d.copy(), 0.10, np.random.default_rng(0), {})[1]) for d in designs]
    assert aimed_over == [1] * 8
    # a mild one stays under the rule, but where a flat area sits right at the quantile and clips whole
    assert sum(aimed_mild) <= 1
