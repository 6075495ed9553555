import io

import numpy as np
import pytest
from PIL import Image

from creative_qa.media import MediaError, decode_bytes, decode_file
from creative_qa.preprocess import PreprocessSpec, preprocess, preprocess_batch


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
