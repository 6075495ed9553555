"""Decode creatives (still images, animated GIFs, videos) into RGB frames, with bounded work.

Every entry point returns a list of ``Frame`` (an ``[H, W, 3]`` uint8 array and its
time in seconds; still images have one frame at 0.0). Anything that cannot be
decoded raises ``MediaError`` with a reason, so callers can report and skip it; a
creative over one of the ``DecodeLimits`` raises ``MediaLimitError`` (a ``MediaError``).

Work is bounded whatever the input:

* videos: the sample times come from the container's duration; the decoder seeks
  to the keyframe before each one and decodes forward, converting only the sampled
  frames to RGB (never "decode all, then sample"). Duration, frame pixels, frames
  decoded and wall time are capped by ``DecodeLimits``;
* ``min_side``: the model only sees small views (``creative_qa.preprocess``), so a
  caller that knows the smallest short side it needs gets large JPEGs decoded
  reduced through the DCT (PIL ``draft``, almost free), other stills and video frames
  reduced by an integer factor, never below ``min_side``. Without it (the model reads
  native pixels) a frame over ``NATIVE_MAX_PIXELS`` is reduced all the same.

Limits default to ``DecodeLimits.from_env()`` (``CREATIVE_QA_MAX_*`` variables, the
same names the serving settings read), so serving, batch scoring and training share them.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}
MEDIA_EXTS = IMAGE_EXTS | VIDEO_EXTS
DEFAULT_MAX_FRAMES = 8
# NOTE: refuse decompression bombs explicitly instead of PIL's warning-then-error dance.
MAX_PIXELS = 64_000_000
# Where the model asks for a creative's own pixels (native crops, the grid view), a still or frame
# over this many is reduced all the same: bounded memory per decode (16 Mpx = 48 MB of RGB; a
# 4,000 x 4,000 creative is read at its own pixels).
NATIVE_MAX_PIXELS = 16_000_000
# Seek instead of decoding forward when the next sample is further away than this.
_SEEK_GAP_S = 1.0


class MediaError(ValueError):
    """A file that is not a decodable image or video."""


class MediaLimitError(MediaError):
    """A decodable creative that is over a decoding limit (too long, too large, too slow)."""


@dataclass(frozen=True)
class DecodeLimits:
    """Caps on the work one creative may cost to decode."""

    max_frame_pixels: int = MAX_PIXELS  # width x height of a still, a GIF canvas or a video frame
    max_duration_s: float = 600.0  # longer videos and animations are refused
    max_decoded_frames: int = 3_000  # frames decoded (not just kept) to reach the samples
    max_decode_s: float = 30.0  # wall time of one decode

    @classmethod
    def from_env(cls) -> DecodeLimits:
        """Defaults overridden by ``CREATIVE_QA_MAX_FRAME_PIXELS`` and friends."""
        env = os.environ
        d = cls()
        return cls(
            max_frame_pixels=int(env.get("CREATIVE_QA_MAX_FRAME_PIXELS", d.max_frame_pixels)),
            max_duration_s=float(env.get("CREATIVE_QA_MAX_DURATION_S", d.max_duration_s)),
            max_decoded_frames=int(env.get("CREATIVE_QA_MAX_DECODED_FRAMES", d.max_decoded_frames)),
            max_decode_s=float(env.get("CREATIVE_QA_MAX_DECODE_S", d.max_decode_s)),
        )


class Frame:
    """One decoded frame: RGB pixels and the time it shows at (0 for a still).

    A still decodes to a PIL image, and preprocessing works on PIL images: the frame keeps
    the image (``source``) and makes the ``(H, W, 3)`` array only when asked for
    (``pixels``). The copy to an array holds the GIL; under concurrent serving that copy,
    not the decoding, was what the decode threads queued for.
    """

    __slots__ = ("_array", "_image", "time_s")

    def __init__(self, pixels: np.ndarray | Image.Image, time_s: float = 0.0):
        if isinstance(pixels, Image.Image) and pixels.mode != "RGB":
            raise ValueError(f"a frame's image must be RGB, got mode {pixels.mode}")
        self._image = pixels if isinstance(pixels, Image.Image) else None
        self._array = None if self._image is not None else pixels
        self.time_s = time_s

    @property
    def pixels(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB (made from the image on first use)."""
        if self._array is None:
            self._array = np.asarray(self._image, dtype=np.uint8)
        return self._array

    @property
    def source(self) -> np.ndarray | Image.Image:
        """What ``preprocess`` takes without a copy: the decoder's image, else the array."""
        return self._image if self._image is not None else self._array

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        if self._image is not None:
            return self._image.size
        return self._array.shape[1], self._array.shape[0]


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, transparency composited on white."""
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return img if img.mode == "RGB" else img.convert("RGB")


def _sample_indices(n: int, k: int) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def reduce_factor(width: int, height: int, min_side: int | None) -> int:
    """The largest integer factor that keeps the short side at ``min_side`` or more (1 = keep).

    Without ``min_side`` (the model asks for native pixels: native crops, the grid view), a
    frame over ``NATIVE_MAX_PIXELS`` is still reduced, by the smallest factor that brings it under.
    """
    if not min_side or min_side <= 0:
        over = width * height / NATIVE_MAX_PIXELS
        return 1 if over <= 1 else math.ceil(math.sqrt(over))
    return max(1, min(width, height) // min_side)


def _reduce(img: Image.Image, r: int) -> Image.Image:
    """``img`` shrunk by the integer factor ``r`` (box filter); palette, 1-bit and 16-bit modes, which
    ``Image.reduce`` refuses, go to RGB(A) first."""
    if r < 2:
        return img
    if img.mode not in ("L", "LA", "RGB", "RGBA", "CMYK", "I", "F", "RGBa", "La"):
        img = img.convert("RGBA" if img.mode in ("P", "PA") or "transparency" in img.info else "RGB")
    return img.reduce(r)


def _check_pixels(width: int, height: int, limits: DecodeLimits, what: str) -> None:
    if width * height > limits.max_frame_pixels:
        raise MediaLimitError(
            f"{what} is {width}x{height}, over the {limits.max_frame_pixels} pixel limit (CREATIVE_QA_MAX_FRAME_PIXELS)"
        )


def _decode_image(data: bytes, max_frames: int, limits: DecodeLimits, min_side: int | None) -> list[Frame]:
    deadline = time.monotonic() + limits.max_decode_s
    try:
        img = Image.open(io.BytesIO(data))
        _check_pixels(img.width, img.height, limits, "image")
        n = getattr(img, "n_frames", 1)
        if n <= 1:
            if img.format == "JPEG" and reduce_factor(img.width, img.height, min_side) >= 2:
                # NOTE: DCT scaling (1/2, 1/4, 1/8): never below the requested size.
                img.draft(img.mode, _draft_size(img, min_side))
            img.load()
            return [Frame(_to_rgb(_reduce(img, reduce_factor(img.width, img.height, min_side))), 0.0)]
        if n > limits.max_decoded_frames:
            raise MediaLimitError(
                f"animation has {n} frames, over the {limits.max_decoded_frames} frame limit "
                "(CREATIVE_QA_MAX_DECODED_FRAMES)"
            )
        # Animated GIF/WebP: sample frames evenly, keep their timestamps.
        wanted = set(_sample_indices(n, max_frames))
        frames: list[Frame] = []
        t = 0.0
        for i, f in enumerate(ImageSequence.Iterator(img)):
            if t > limits.max_duration_s:
                raise MediaLimitError(
                    f"animation is longer than the {limits.max_duration_s:g} s limit (CREATIVE_QA_MAX_DURATION_S)"
                )
            if time.monotonic() > deadline:
                raise MediaLimitError(f"decoding took longer than {limits.max_decode_s:g} s (CREATIVE_QA_MAX_DECODE_S)")
            if i in wanted:
                rgb = _to_rgb(_reduce(f, reduce_factor(f.width, f.height, min_side)))
                # NOTE: the iterator moves one image object from frame to frame: keep a copy, not the object.
                frames.append(Frame(rgb.copy() if rgb is f else rgb, t))
            t += float(f.info.get("duration", 100)) / 1000.0
        return frames
    except MediaError:
        raise
    except UnidentifiedImageError as e:
        raise MediaError("not a decodable image: an unknown format or a corrupt file") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(f"not a decodable image: {_reason(e)}") from e


def _draft_size(img: Image.Image, min_side: int | None) -> tuple[int, int]:
    """The size to ask ``draft`` for so that the short side stays at ``min_side`` or more (without
    ``min_side``: the size ``reduce_factor`` reduces to)."""
    if not min_side or min_side <= 0:
        r = reduce_factor(img.width, img.height, None)
        return max(1, math.ceil(img.width / r)), max(1, math.ceil(img.height / r))
    scale = min_side / min(img.width, img.height)
    return max(1, math.ceil(img.width * scale)), max(1, math.ceil(img.height * scale))


def _video_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base
    return None


def _frame_rgb(frame, min_side: int | None) -> np.ndarray:
    """A decoded video frame as RGB, reduced by the factor ``reduce_factor`` picks.

    NOTE: ``threads=1``: swscale's default (0: a slice thread per core) starts and joins a thread pool per
    conversion context, and that join deadlocked in CI (a spawned view-cache worker, every thread in a
    futex wait under ``avpriv_slicethread_free``). A frame this size converts in well under a millisecond.
    """
    r = reduce_factor(frame.width, frame.height, min_side)
    size = {"width": frame.width // r, "height": frame.height // r} if r >= 2 else {}
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24", threads=1, **size))


class _Budget:
    """Counts decoded frames and wall time against the limits."""

    def __init__(self, limits: DecodeLimits):
        self.limits = limits
        self.decoded = 0
        self.deadline = time.monotonic() + limits.max_decode_s

    def tick(self) -> None:
        self.decoded += 1
        if self.decoded > self.limits.max_decoded_frames:
            raise MediaLimitError(
                f"reaching the sampled frames needs more than {self.limits.max_decoded_frames} decoded frames "
                "(CREATIVE_QA_MAX_DECODED_FRAMES)"
            )
        if time.monotonic() > self.deadline:
            raise MediaLimitError(
                f"decoding took longer than {self.limits.max_decode_s:g} s (CREATIVE_QA_MAX_DECODE_S)"
            )


def _sample_by_time(container, stream, duration: float, k: int, budget: _Budget, min_side: int | None) -> list[Frame]:
    """Seek/skip to ``k`` evenly spaced times; only the sampled frames are converted to RGB."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    targets = [start + duration * (i + 0.5) / k for i in range(k)]
    out: list[Frame] = []
    it = None  # the decoding iterator
    prev, prev_t = None, -math.inf  # last frame starting at or before the current target
    ahead = None  # a frame decoded past the current target, kept for the next one
    for target in targets:
        reached = _time_of(ahead) if ahead is not None else prev_t
        if it is None or target - reached > _SEEK_GAP_S:
            try:
                container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
                it, prev, prev_t, ahead = container.decode(stream), None, -math.inf, None
            except Exception as e:  # noqa: BLE001  (unseekable: decode forward from where we are)
                log.debug("seek failed (%s); decoding forward", e)
                it = it or container.decode(stream)
        while True:
            if ahead is not None:
                f, ahead = ahead, None
            else:
                f = next(it, None)
                if f is None:
                    break
                budget.tick()
            t = _time_of(f)
            if t > target and prev is not None:
                ahead = f  # NOTE: the frame showing at `target` is the last one starting at or before it
                break
            prev, prev_t = f, t
            if t > target:
                break
        if prev is None:
            break
        if out and abs(out[-1].time_s - prev_t) < 1e-6:
            continue  # a short video has fewer frames than samples
        out.append(Frame(_frame_rgb(prev, min_side), prev_t))
    return out


def _time_of(frame) -> float:
    """A decoded frame's presentation time in seconds (0 when the container has none)."""
    return float(frame.time) if frame.time is not None else 0.0


def _sample_by_stride(container, stream, k: int, budget: _Budget, min_side: int | None) -> list[Frame]:
    """No known duration: keep every ``stride``-th frame, doubling the stride as the buffer fills."""
    kept: list[Frame] = []
    stride = 1
    for i, f in enumerate(container.decode(stream)):
        budget.tick()
        if i % stride:
            continue
        kept.append(Frame(_frame_rgb(f, min_side), float(f.time or 0.0)))
        if len(kept) >= 2 * k:
            kept, stride = kept[::2], stride * 2
    return [kept[i] for i in _sample_indices(len(kept), k)]


def _decode_video(data: bytes, max_frames: int, limits: DecodeLimits, min_side: int | None) -> list[Frame]:
    import av  # PyAV is heavy; only videos need it

    budget = _Budget(limits)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise MediaError("file has no video stream")
            stream = container.streams.video[0]
            # NOTE: no decoder threads. Frame threads must be drained to EOF before the close, and sampling
            # stops early (PyAV #1849); FFmpeg's slice-thread pool deadlocked at its join in CI (see _frame_rgb).
            # H.264 from common encoders has one slice per frame, so slice threads bought nothing; a server and
            # a batch run decode many creatives at once instead.
            stream.thread_count = 1
            w, h = stream.codec_context.width, stream.codec_context.height
            _check_pixels(w, h, limits, "video frame")
            duration = _video_duration(container, stream)
            if duration is not None and duration > limits.max_duration_s:
                raise MediaLimitError(
                    f"video is {duration:.1f} s long, over the {limits.max_duration_s:g} s limit "
                    "(CREATIVE_QA_MAX_DURATION_S)"
                )
            if duration and duration > 0 and stream.time_base is not None:
                frames = _sample_by_time(container, stream, duration, max_frames, budget, min_side)
            else:
                frames = _sample_by_stride(container, stream, max_frames, budget, min_side)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:  # type: ignore[attr-defined]
        raise MediaError(f"not a decodable video: {_reason(e)}") from e
    if not frames:
        raise MediaError("video has no decodable frames")
    for f in frames:
        _check_pixels(*f.size, limits, "video frame")
    return frames


def _reason(e: BaseException) -> str:
    """A decoder's error in words: FFmpeg's ``strerror`` without its errno and ``'<none>'`` file name,
    PIL's text without object reprs (``<_io.BytesIO object at 0x...>``)."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-f]+>", "", text)
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return text.split(": '<none>'")[0].strip().rstrip(":") or type(e).__name__


def _sniff_video(data: bytes) -> bool:
    head = data[:16]
    return head[4:8] == b"ftyp" or head[:4] == b"\x1aE\xdf\xa3" or head[:4] == b"RIFF" and head[8:12] == b"AVI "


def decode_bytes(
    data: bytes,
    filename: str | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    limits: DecodeLimits | None = None,
    min_side: int | None = None,
) -> list[Frame]:
    """Decode an image or video held in memory; the content decides, not the name.

    ``limits`` caps the work (default: ``DecodeLimits.from_env()``); ``min_side`` lets
    large creatives be decoded reduced, keeping their short side at ``min_side`` or more.
    """
    if not data:
        raise MediaError("empty file")
    limits = limits or DecodeLimits.from_env()
    if looks_like_video(data, filename):
        return _decode_video(data, max_frames, limits, min_side)
    return _decode_image(data, max_frames, limits, min_side)


def looks_like_video(data: bytes, filename: str | None = None) -> bool:
    """Whether ``decode_bytes`` would decode ``data`` as a video (the content decides, then the name)."""
    return _sniff_video(data) or bool(filename and is_video_path(filename) and not _looks_like_image(data))


def decode_pixels(
    data: bytes,
    filename: str | None = None,
    min_side: int | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    limits: DecodeLimits | None = None,
) -> int:
    """About how many pixels decoding ``data`` holds at once, from its header alone (cheap).

    A still image: its size after JPEG DCT scaling (``min_side``, as ``draft`` picks it); an
    animation: the canvas being composed plus the ``max_frames`` kept (reduced by the same
    factor decoding uses). Videos (decoded a frame at a time under their own limits), anything
    unreadable, and anything over ``limits.max_frame_pixels`` (decoding refuses it before
    allocating) hold nothing here: 0.
    """
    if not data or looks_like_video(data, filename):
        return 0
    limits = limits or DecodeLimits.from_env()
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        animated = bool(getattr(img, "is_animated", False))  # NOTE: not n_frames, which walks every frame
    except Exception:  # noqa: BLE001  (decoding reports it properly)
        return 0
    if w * h > limits.max_frame_pixels:
        return 0
    if animated:
        r = reduce_factor(w, h, min_side)
        return w * h + max_frames * math.ceil(w / r) * math.ceil(h / r)
    if img.format == "JPEG" and reduce_factor(w, h, min_side) >= 2:
        dw, dh = _draft_size(img, min_side)
        scale = min(w // dw, h // dh)
        s = next(f for f in (8, 4, 2, 1) if scale >= f)  # PIL's JpegImageFile.draft
        return math.ceil(w / s) * math.ceil(h / s)
    return w * h


def _looks_like_image(data: bytes) -> bool:
    return data[:8].startswith((b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM")) or data[8:12] == b"WEBP"


def decode_file(
    path: str | Path,
    max_frames: int = DEFAULT_MAX_FRAMES,
    limits: DecodeLimits | None = None,
    min_side: int | None = None,
) -> list[Frame]:
    """Decode an image or video file into frames (see ``decode_bytes``)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise MediaError(f"cannot read {p}: {e.strerror or e}") from e
    return decode_bytes(data, p.name, max_frames, limits, min_side)


def load_frame(path: str | Path, which: str | float = "middle") -> np.ndarray:
    """One frame of a creative: the image itself, or a video frame ('middle', 'first' or a 0-1 position)."""
    frames = decode_file(path)
    if len(frames) == 1 or which == "first":
        return frames[0].pixels
    pos = 0.5 if which == "middle" else float(which)
    return frames[min(len(frames) - 1, int(pos * len(frames)))].pixels
