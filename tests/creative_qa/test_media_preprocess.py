import io

import numpy as np
import pytest
from PIL import Image

from creative_qa.media import DecodeLimits, MediaError, MediaLimitError, decode_bytes, decode_file
from creative_qa.preprocess import PreprocessSpec, preprocess, preprocess_batch, short_side_of


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_png_and_gif_and_video(tiny_data):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    frames = decode_bytes(_png(rgb))
    assert len(frames) == 1 and np.array_equal(frames[0].pixels, rgb)

    gif = io.BytesIO()
    imgs = [Image.fromarray(np.full((20, 20, 3), v, np.uint8)) for v in (0, 120, 250)]
    imgs[0].save(gif, format="GIF", save_all=True, append_images=imgs[1:], duration=200)
    frames = decode_bytes(gif.getvalue())
    assert len(frames) == 3 and frames[2].time_s == pytest.approx(0.4)
    # each sampled frame keeps its own pixels (the GIF iterator moves one image object along)
    assert [int(f.pixels.mean()) for f in frames] == [0, 120, 250]

    videos = sorted(tiny_data["train_labeled"].parent.rglob("*.mp4"))
    assert videos, "the tiny data set should contain a video"
    frames = decode_file(videos[0], max_frames=3)
    assert len(frames) == 3 and frames[0].pixels.ndim == 3
    assert frames[0].time_s < frames[-1].time_s


@pytest.mark.parametrize("data", [b"", b"not an image at all", _png(np.zeros((8, 8, 3), np.uint8))[:40]])
def test_undecodable_bytes_raise_media_error(data):
    with pytest.raises(MediaError):
        decode_bytes(data, "x.png")


def test_preprocess_shapes_and_views():
    spec = PreprocessSpec(input_size=64, crops=2, detail_side=128)
    frame = np.random.default_rng(0).integers(0, 255, (256, 455, 3), dtype=np.uint8)
    out = preprocess(frame, spec)
    assert out.shape == (3, 64, 64, 3) and out.dtype == np.uint8
    assert preprocess_batch([frame, frame], spec).shape == (2, 3, 64, 64, 3)


def test_a_decoded_still_is_preprocessed_from_its_image_with_the_same_views_as_its_array():
    rgb = np.random.default_rng(1).integers(0, 255, (300, 420, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((300, 420, 1), 255, np.uint8)], axis=-1)
    spec = PreprocessSpec(input_size=64, crops=2, detail_side=128)
    for data in (_png(rgb), _png(rgba)):
        (frame,) = decode_bytes(data)
        assert isinstance(frame.source, Image.Image) and frame.size == (420, 300)  # no array made yet
        from_image = preprocess(frame.source, spec)
        assert np.array_equal(frame.pixels, rgb)
        assert np.array_equal(from_image, preprocess(frame.pixels, spec))
    with pytest.raises(ValueError, match="RGB"):
        preprocess(Image.fromarray(rgba), spec)


def test_detail_crops_keep_the_fine_texture_the_whole_view_loses():
    # A 1-pixel checkerboard: pure fine detail (what noise and JPEG blocks look like).
    yy, xx = np.mgrid[0:512, 0:512]
    board = (((yy + xx) % 2) * 255).astype(np.uint8)
    frame = np.stack([board] * 3, axis=-1)
    spec = PreprocessSpec(input_size=64, crops=1, detail_side=0)  # native-size crop
    whole, crop = preprocess(frame, spec).astype(float)
    assert whole.std() < 20  # averaged away by the resize
    assert crop.std() > 100  # still there at native scale


def test_whole_view_keeps_letterbox_bars():
    frame = np.full((200, 300, 3), 180, np.uint8)
    frame[:20] = 0
    frame[-20:] = 0
    whole = preprocess(frame, PreprocessSpec(input_size=64, crops=0))[0]
    assert whole[0].max() < 10 and whole[-1].max() < 10 and whole[32].min() > 170


def test_small_creatives_are_upscaled_for_crops():
    spec = PreprocessSpec(input_size=64, crops=2, detail_side=0)
    assert preprocess(np.zeros((30, 40, 3), np.uint8), spec).shape == (3, 64, 64, 3)


def test_bad_spec_and_bad_frame_are_errors():
    with pytest.raises(ValueError):
        PreprocessSpec(input_size=128, detail_side=64)
    with pytest.raises(ValueError):
        preprocess(np.zeros((10, 10), np.uint8), PreprocessSpec())


# --- bounded decoding --------------------------------------------------------------------


def _video(seconds: float, fps: int = 30, w: int = 64, h: int = 48) -> bytes:
    """A tiny H.264 MP4: a bar whose length encodes the frame index (so samples can be told apart)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            a = np.full((h, w, 3), 60, np.uint8)
            a[: h // 2, : 1 + (i * w) // int(seconds * fps)] = 230
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def _decode_peak(data: bytes, **kwargs) -> tuple[list, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        frames = decode_bytes(data, "v.mp4", **kwargs)
        return frames, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_video_decoder_memory_does_not_grow_with_the_video_length():
    short, long = _video(4), _video(180)  # 120 vs 5,400 frames of 64x48
    frames_s, peak_s = _decode_peak(short)
    frames_l, peak_l = _decode_peak(long)
    assert len(frames_s) == len(frames_l) == 8
    # Decoding every frame to RGB first would hold 5,400 x 9 KB = 50 MB here.
    assert peak_l < peak_s + 512 * 1024, (peak_s, peak_l)
    # The samples spread over the whole video, in order; the bar shows which frame each is.
    times = [f.time_s for f in frames_l]
    assert times == sorted(times) and times[0] < 15 and times[-1] > 165
    bars = [int((f.pixels[5] > 150).all(axis=-1).sum()) for f in frames_l]
    assert bars == sorted(bars) and bars[-1] - bars[0] > 40


def test_short_video_gives_each_frame_once():
    frames = decode_bytes(_video(1, fps=4), "v.mp4", max_frames=8)
    assert len(frames) == 4 and len({f.time_s for f in frames}) == 4


def test_sampled_video_decoding_starts_no_thread_pool_that_can_hang(monkeypatch):
    """FFmpeg's thread pools hung spawned view-cache workers in CI: frame threads must be drained to EOF before
    the close (PyAV #1849), where sampling stops early, and swscale's slice-thread pool deadlocked at its
    join in the RGB conversion. The sampler decodes and converts on the calling thread."""
    import av

    decoders, conversions = [], []
    real_open = av.open

    class Proxy:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

    class FrameSpy(Proxy):
        def to_ndarray(self, **kwargs):
            conversions.append(kwargs.get("threads"))
            return self.inner.to_ndarray(**kwargs)

    class ContainerSpy(Proxy):
        def __enter__(self):
            self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def decode(self, stream):
            decoders.append(stream.thread_count)
            return (FrameSpy(f) for f in self.inner.decode(stream))

    monkeypatch.setattr(av, "open", lambda *a, **k: ContainerSpy(real_open(*a, **k)))
    for min_side in (None, 16):  # whole frames, and frames reduced while converting
        frames = decode_bytes(_video(4), "v.mp4", max_frames=3, min_side=min_side)
        assert len(frames) == 3
    assert decoders and all(n == 1 for n in decoders), decoders
    assert conversions == [1] * 6, conversions


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (DecodeLimits(max_duration_s=10), "over the 10 s limit"),
        (DecodeLimits(max_frame_pixels=1000), "over the 1000 pixel limit"),
        (DecodeLimits(max_decoded_frames=20), "more than 20 decoded frames"),
        (DecodeLimits(max_decode_s=0), "longer than 0 s"),
    ],
)
def test_video_over_a_limit_is_refused_with_the_reason(limits, reason):
    with pytest.raises(MediaLimitError, match=reason):
        decode_bytes(_video(12, fps=10), "v.mp4", limits=limits)


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CREATIVE_QA_MAX_DURATION_S", "5")
    with pytest.raises(MediaLimitError, match="over the 5 s limit"):
        decode_bytes(_video(8, fps=5), "v.mp4")
    monkeypatch.setenv("CREATIVE_QA_MAX_FRAME_PIXELS", "100")
    with pytest.raises(MediaLimitError, match="100 pixel limit"):
        decode_bytes(_png(np.zeros((20, 20, 3), np.uint8)))


def test_animation_over_the_frame_limit_is_refused():
    gif = io.BytesIO()
    imgs = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in range(0, 250, 10)]
    imgs[0].save(gif, format="GIF", save_all=True, append_images=imgs[1:], duration=50)
    assert len(decode_bytes(gif.getvalue(), max_frames=4)) == 4
    with pytest.raises(MediaLimitError, match="frame limit"):
        decode_bytes(gif.getvalue(), limits=DecodeLimits(max_decoded_frames=10))


def _big_jpeg(w: int, h: int) -> bytes:
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx // 97 + yy // 89) % 2) * 200], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def test_large_jpeg_is_decoded_reduced_but_the_model_sees_the_same_views():
    data = _big_jpeg(3000, 2000)
    full = decode_bytes(data)[0].pixels
    reduced = decode_bytes(data, min_side=512)[0].pixels
    assert full.shape == (2000, 3000, 3)
    assert reduced.shape[0] >= 512 and reduced.shape[0] <= 1024 and reduced.shape[1] >= 768  # DCT 1/2 or 1/4
    spec = PreprocessSpec(input_size=128, crops=2, detail_side=256)
    diff = np.abs(preprocess(full, spec).astype(float) - preprocess(reduced, spec).astype(float)).mean()
    assert diff < 2.0  # of 255: the same views to the model


def test_native_pixels_are_read_up_to_a_cap_and_larger_creatives_reduced(monkeypatch):
    import creative_qa.media as media

    monkeypatch.setattr(media, "NATIVE_MAX_PIXELS", 1_000_000)
    data = _big_jpeg(3000, 2000)  # 6 Mpx: brought under 1 Mpx (the DCT halves it, then a factor 2)
    frame = decode_bytes(data)[0].pixels
    assert frame.shape[0] * frame.shape[1] <= 1_000_000 and frame.shape[0] >= 2000 // 4
    png = decode_bytes(_png(np.zeros((900, 1300, 3), np.uint8)))[0].pixels
    assert png.shape == (450, 650, 3)  # 1.17 Mpx: factor 2
    assert decode_bytes(_png(np.zeros((800, 1200, 3), np.uint8)))[0].pixels.shape == (800, 1200, 3)  # under: kept


def test_png_is_reduced_by_an_integer_factor_never_below_min_side():
    frames = decode_bytes(_png(np.zeros((900, 1300, 3), np.uint8)), min_side=256)
    assert frames[0].pixels.shape == (300, 434, 3)  # factor 3 (rounded up): 900 // 3 = 300 >= 256
    assert decode_bytes(_png(np.zeros((300, 400, 3), np.uint8)), min_side=256)[0].pixels.shape == (300, 400, 3)


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "LA"])
def test_large_images_of_every_mode_are_reduced_not_refused(mode):
    """Palette PNGs, 1-bit and 16-bit images (which Image.reduce refuses) decode reduced to RGB."""
    img = Image.new("RGB", (1300, 1100), (30, 200, 90)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    frames = decode_bytes(buf.getvalue(), min_side=256)
    assert frames[0].pixels.shape == (275, 325, 3)  # factor 4


def test_large_gif_animation_is_reduced_not_refused():
    frames = [Image.new("P", (1200, 1000), i * 40) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    out = decode_bytes(buf.getvalue(), min_side=448)
    assert len(out) == 3 and out[0].pixels.shape == (500, 600, 3)


def test_scorer_decodes_no_smaller_than_its_preprocessing_needs(tiny_onnx):
    from creative_qa.scorer import Scorer

    data = _big_jpeg(2400, 1600)
    # Without native pixels to read, a decode reduced through the DCT to twice the detail side
    # gives the whole view the full decode gives, up to resampling (the detail crops' windows
    # may move between near-equal edge scores, so only the whole view is compared).
    plain = PreprocessSpec(64, 2, 128)
    assert plain.decode_min_side == 256
    reduced = decode_bytes(data, min_side=256)[0].pixels
    assert 256 <= min(reduced.shape[:2]) < 1600
    full_views, reduced_views = (preprocess(p, plain).astype(float) for p in (decode_bytes(data)[0].pixels, reduced))
    assert full_views.shape == reduced_views.shape and np.abs(full_views[0] - reduced_views[0]).mean() < 1.0
    # A grid view (the default) reads the creative's own pixels: a reduced decode loses the JPEG's blocks,
    # so such a model decodes at full size.
    grid = PreprocessSpec(64, 2, 128, grid_view=1)
    assert grid.decode_min_side is None
    views = [preprocess(decode_bytes(data, min_side=m)[0].pixels, grid) for m in (None, 256)]
    assert not np.array_equal(views[0][-1], views[1][-1])
    scorer = Scorer(tiny_onnx)
    assert scorer.spec.grid_view == 1 and scorer.decode_min_side is None
    assert min(scorer.decode(data)[0].pixels.shape[:2]) == 1600


def test_native_crops_keep_pixel_noise_that_rescaling_averages_away():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1024, 0:1280]
    smooth = np.stack([(xx / 1280 * 200 + 20), (yy / 1024 * 200 + 20), np.full(xx.shape, 128.0)], -1)
    noisy = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    spec = PreprocessSpec(input_size=64, crops=2, detail_side=256, native_crops=2)
    assert spec.views == 5 and spec.decode_min_side is None  # native crops need the full resolution
    out = preprocess(noisy, spec).astype(float)
    assert out.shape == (5, 64, 64, 3)

    def residual(view):  # pixel noise: what a 3x3 mean leaves
        return np.abs(
            view[1:-1, 1:-1]
            - sum(np.roll(np.roll(view, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))[1:-1, 1:-1] / 9
        ).mean()

    detail, native = [residual(v) for v in out[1:3]], [residual(v) for v in out[3:5]]
    assert min(native) > 2 * max(detail)  # rescaling 1024 -> 256 averaged the noise away; native crops keep it
    served = PreprocessSpec(input_size=64, crops=2, detail_side=256)
    assert np.array_equal(out[:3], preprocess(noisy, served).astype(float))  # whole + detail views unchanged
    tiny = preprocess(np.zeros((40, 50, 3), np.uint8), spec)
    assert tiny.shape == (5, 64, 64, 3)  # a creative smaller than a view is upscaled, never cropped past its edge


def _jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.mark.parametrize("size", [256, 1500])
def test_grid_view_shows_the_jpeg_block_grid_that_a_clean_creative_lacks(size):
    from creative_qa.synth import SynthConfig, make_creative
    from creative_qa.synth.defects import to_pil

    # NOTE: a photo behind the design: on a flat one almost every block is either empty or an edge, so
    # the quantisation number reads high with or without a JPEG, and a smooth gradient barely shows blocks.
    c = make_creative(np.random.default_rng(5), SynthConfig(size=256, backgrounds=("photo",)), chosen={})
    clean = np.asarray(to_pil(c.image).resize((size * c.image.shape[1] // c.image.shape[0], size)))
    spec = PreprocessSpec(input_size=64, crops=2, detail_side=256, grid_view=1)
    assert spec.views == 4 and spec.decode_min_side is None  # the grid needs the creative's own pixels
    served = PreprocessSpec(input_size=64, crops=2, detail_side=256)
    grid = {}
    for name, pixels in (("clean", clean), ("q10", _jpeg(clean, 10)), ("q85", _jpeg(clean, 85))):
        views = preprocess(pixels, spec)
        assert views.shape == (4, 64, 64, 3)
        assert np.array_equal(views[:3], preprocess(pixels, served))  # the other views are unchanged
        g = views[-1]
        for turned in (g[::-1], g[:, ::-1], np.rot90(g), np.rot90(g, 3)):
            assert np.array_equal(turned, g)  # numbers as square rings: flips and rotations leave it as it is
        assert (g[:8] == g[0, 0]).all() and (g[16:48, 16:48] == g[32, 32]).all()  # the grid's, then the profile's
        assert g[8, 8].tolist() == g[8:56, 8:56][~np.pad(np.ones((32, 32), bool), 8)].reshape(-1, 3)[0].tolist()
        assert short_side_of(g[8, 8, 0]) == pytest.approx(min(clean.shape[:2]), rel=0.02)  # the creative's size
        grid[name] = views[-1, 0, 0].astype(int)  # block-edge lift at the 8th column/row, at the top one, in levels
    # steps across every 8th column and row (where the blocks meet) stand out in the coarse JPEG only
    assert grid["q10"][0] > 1.3 * 64 and grid["q10"][0] > max(grid["clean"][0], grid["q85"][0]) + 10, grid
    assert grid["clean"][0] < 1.2 * 64 and grid["q10"][2] > grid["clean"][2] + 8, grid
    assert grid["q10"][1] > 0.9 * 255 and grid["clean"][1] < 0.75 * 255, grid  # coarse quantisation: q10 only


def test_a_creative_too_small_for_the_block_grid_reads_as_no_evidence():
    spec = PreprocessSpec(input_size=16, crops=1, detail_side=16, grid_view=1)
    for shape in ((6, 5, 3), (12, 40, 3)):
        pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        assert preprocess(pixels, spec)[-1, 0, 0].tolist() == [64, 0, 128]


def test_the_grid_view_reads_the_region_its_spec_names_and_old_specs_keep_theirs():
    from creative_qa.synth import SynthConfig, make_creative
    from creative_qa.synth.defects import to_pil

    c = make_creative(np.random.default_rng(5), SynthConfig(size=256), chosen={})
    clean = np.asarray(to_pil(c.image).resize((1024, 1024)))
    mixed = _jpeg(clean, 10).copy()
    mixed[256:768, 256:768] = clean[256:768, 256:768]  # the central 512 px clean, a coarse JPEG around it
    new = PreprocessSpec(input_size=64, crops=1, detail_side=256, grid_view=1, grid_window="centre")
    assert new.grid_region == 512 and PreprocessSpec.from_dict(new.to_dict()) == new
    # a model exported before either field: it read 1,024 px at the centre
    old = {k: v for k, v in new.to_dict().items() if k not in ("grid_region", "grid_window")}
    assert PreprocessSpec.from_dict(old).grid_region == 1024
    assert PreprocessSpec.from_dict(old).grid_window == "centre"
    # ... and one exported with the 512 px region but before the window moved to the edges keeps the centre
    assert PreprocessSpec.from_dict(old | {"grid_region": 512}).grid_window == "centre"
    views = {
        r: preprocess(mixed, PreprocessSpec.from_dict(d))[-1, 0, 0] for r, d in ((512, new.to_dict()), (1024, old))
    }
    # 512 px reads only the clean centre: exactly the clean creative's numbers; 1,024 px sees the blocks around it
    assert views[512].tolist() == preprocess(clean, new)[-1, 0, 0].tolist()
    assert int(views[1024][0]) > int(views[512][0]) + 20, views
    with pytest.raises(ValueError, match="grid_region"):
        PreprocessSpec(grid_view=1, grid_region=100)
    with pytest.raises(ValueError, match="grid_window"):
        PreprocessSpec(grid_view=1, grid_window="corner")


def test_the_grid_view_reads_where_a_large_creative_has_detail_not_its_flat_centre():
    """A JPEG's quantisation shows on detail: on a large creative whose centre is flat, the window
    with the most edge energy (the default) sees the blocks that the centre window cannot."""
    from creative_qa.preprocess import edgiest_window, grid_view
    from creative_qa.synth import SynthConfig, make_creative
    from creative_qa.synth.defects import to_pil

    c = make_creative(np.random.default_rng(5), SynthConfig(size=256, backgrounds=("photo",)), chosen={})
    canvas = np.full((1536, 1536, 3), 128, np.uint8)
    canvas[1000:1384, 1096:1480] = np.asarray(to_pil(c.image).resize((384, 384)))  # the detail, off-centre
    coarse = _jpeg(canvas, 10)
    left, top = edgiest_window(Image.fromarray(coarse), 512, 512)
    # on the block grid, and the window holds the whole detail (the centre window, 512-1024, misses it)
    assert left % 8 == 0 and top % 8 == 0, (left, top)
    assert left <= 1096 and left + 512 >= 1480 and top <= 1000 and top + 512 >= 1384, (left, top)
    # every corner on the block grid can be chosen, up to the last one: detail in the bottom-right 48 px
    corner = np.full((1080, 1920, 3), 128, np.uint8)
    corner[-48:, -48:] = np.random.default_rng(0).integers(0, 255, (48, 48, 3))
    assert edgiest_window(Image.fromarray(corner), 512, 512) == (1408, 568)
    # smaller than the window one way: read whole that way, placed over the detail the other
    strip = np.full((400, 1536, 3), 128, np.uint8)
    strip[:, 1200:1300] = np.random.default_rng(1).integers(0, 255, (400, 100, 3))
    left, top = edgiest_window(Image.fromarray(strip), 512, 400)
    assert top == 0 and left <= 1200 and left + 512 >= 1300
    edges, centre = (grid_view(Image.fromarray(coarse), 4, 512, w)[0, 0].astype(int) for w in ("edges", "centre"))
    assert edges[0] > centre[0] + 20 and edges[1] > 0.9 * 255 > centre[1], (edges, centre)
    assert PreprocessSpec(grid_view=1).grid_window == "edges"
    # a creative no larger than the region is read whole either way
    small = Image.fromarray(coarse[1000:1400, 1096:1496])
    assert grid_view(small, 4, 512, "edges").tolist() == grid_view(small, 4, 512, "centre").tolist()


@pytest.mark.parametrize("size", [256, 1080])
def test_the_grid_views_profile_tells_an_upscale_from_a_mild_one_a_sharp_and_a_noisy_creative_at_any_size(size):
    """An upscale by 3x or more (``low_resolution``) leaves ramps of 3 px or more at the creative's own
    pixels whatever its size; a rescaled crop of a large creative shows none. The profile reads them."""
    from creative_qa.synth import SynthConfig, make_creative
    from creative_qa.synth.defects import to_pil

    spec = PreprocessSpec(input_size=64, crops=2, detail_side=256, grid_view=1)
    assert spec.grid_profile == 1  # on by default
    for seed in (3, 5):
        profile = {}
        cases = {"clean": {}, "up": {"low_resolution": 3.2}, "mild": {"low_resolution": 1.5}, "noisy": {"noisy": 0.08}}
        for name, chosen in cases.items():
            c = make_creative(np.random.default_rng(seed), SynthConfig(size=size), chosen=chosen)
            profile[name] = preprocess(np.asarray(to_pil(c.image)), spec)[-1, 32, 32].astype(int)
        # log2(E2/E1), log2(E4/E2): ramps of 3 px raise both; a 1.5x upscale only the first; noise lowers them
        assert profile["up"][1] > profile["mild"][1] + 15 and profile["up"][0] > profile["clean"][0] + 30, profile
        assert profile["mild"][0] > profile["clean"][0] + 15 and profile["clean"][0] > profile["noisy"][0] + 15, profile
    # a model exported before the profile existed reads uniform planes, as it was trained on
    old = {k: v for k, v in spec.to_dict().items() if k != "grid_profile"}
    assert PreprocessSpec.from_dict(old).grid_profile == 0
    g = preprocess(np.asarray(to_pil(c.image)), PreprocessSpec.from_dict(old))[-1]
    assert (g == g[0, 0]).all() and g[0, 0].tolist() == preprocess(np.asarray(to_pil(c.image)), spec)[-1, 0, 0].tolist()
    with pytest.raises(ValueError, match="grid_profile"):
        PreprocessSpec(grid_view=1, grid_profile=2)


@pytest.mark.parametrize(("short", "factor"), [(512, 1), (1080, 2), (2160, 4)])
def test_reduced_views_are_the_full_size_views_in_kind_and_old_specs_keep_theirs(short, factor):
    from creative_qa.preprocess import reduced
    from creative_qa.synth import SynthConfig, make_creative
    from creative_qa.synth.defects import to_pil

    c = make_creative(np.random.default_rng(7), SynthConfig(size=512), chosen={})
    img = to_pil(c.image).resize((short * 16 // 9, short), Image.Resampling.BICUBIC)
    img = Image.fromarray(_jpeg(np.asarray(img), 80))  # a JPEG, as creatives come
    new = PreprocessSpec(input_size=64, crops=3, detail_side=256, grid_view=1)
    old = PreprocessSpec.from_dict({k: v for k, v in new.to_dict().items() if k != "reduce"})
    assert new.reduce == 1 and old.reduce == 0 and PreprocessSpec.from_dict(new.to_dict()) == new
    small, k = reduced(img, new.picture_side)
    assert k == factor and min(small.size) >= new.picture_side  # never below twice what the views sample
    fast, full = preprocess(img, new).astype(int), preprocess(img, old).astype(int)
    # the whole view: made from the detail crops' picture, not the full size; the same to the model
    assert np.abs(fast[0] - full[0]).mean() < 1.0
    assert (full[0] == np.asarray(img.resize((64, 64), Image.Resampling.BILINEAR))).all()  # the old spec: as before
    # the grid view's numbers are read at the creative's own pixels either way: its JPEG evidence is the same
    assert np.abs(fast[-1, 0, 0] - full[-1, 0, 0]).max() <= 4, (fast[-1, 0, 0], full[-1, 0, 0])


def test_the_grid_views_text_cover_tells_text_heavy_designs_at_any_size_and_old_specs_read_none():
    """``text_heavy`` is a share of the whole creative (text boxes over 20 % of it): the size ring's third
    number carries the share text-line boxes cover, found at 256 px whatever the creative's size."""
    from creative_qa.preprocess import NO_TEXT_COVER, TEXT_LEVELS, text_cover, text_lines
    from creative_qa.synth.defects import to_pil
    from creative_qa.synth.render import render_design

    spec = PreprocessSpec(input_size=64, crops=2, detail_side=256, grid_view=1)
    assert spec.text_cover == 1  # on by default
    cover = {False: [], True: []}
    for heavy in (False, True):
        for seed in range(8):
            d = render_design(np.random.default_rng(seed), 256, text_heavy=heavy)
            g = preprocess(np.asarray(to_pil(d.image)), spec)[-1]
            assert (g[8:56, 8:56][~np.pad(np.ones((32, 32), bool), 8)] == g[8, 8]).all()  # a ring: flips keep it
            cover[heavy].append(int(g[8, 8, 2]))
    assert min(cover[True]) > np.median(cover[False]) and np.mean(cover[True]) > 3 * np.mean(cover[False]), cover
    assert max(cover[True]) > 0.2 * TEXT_LEVELS  # a design with text boxes over 20 % reads as such
    # the same design at 1,080 px reads as text heavy too (its lines found at 256 px)
    d = render_design(np.random.default_rng(4), 1080, text_heavy=True)
    assert text_cover(to_pil(d.image)) > max(0.2 * TEXT_LEVELS, max(cover[False])), cover
    # a picture of no text: smooth shading and a photograph-like texture, no line boxes
    yy, xx = np.mgrid[0:256, 0:400]
    smooth = (128 + 100 * np.sin(xx / 40.0) * np.cos(yy / 55.0)).astype(np.uint8)
    assert text_lines(smooth) == (0.0, 0.0)
    # a model exported before the field reads 128 there, as it was trained on
    old = {k: v for k, v in spec.to_dict().items() if k != "text_cover"}
    assert PreprocessSpec.from_dict(old).text_cover == 0
    assert preprocess(np.asarray(to_pil(d.image)), PreprocessSpec.from_dict(old))[-1, 8, 8, 2] == NO_TEXT_COVER
    with pytest.raises(ValueError, match="text_cover"):
        PreprocessSpec(grid_view=1, text_cover=2)
