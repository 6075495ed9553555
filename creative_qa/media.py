"""Decode creatives (still images, animated GIFs, videos) into RGB frames.

Every entry point returns a list of ``Frame`` (an ``[H, W, 3]`` uint8 array and its
time in seconds; still images have one frame at 0.0). Anything that cannot be
decoded raises ``MediaError`` with a reason, so callers can report and skip it.
"""

from __future__ import annotations

import io
import logging
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


class MediaError(ValueError):
    """A file that is not a decodable image or video."""


@dataclass(frozen=True)
class Frame:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    time_s: float = 0.0


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _sample_indices(n: int, k: int) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def _decode_image(data: bytes, max_frames: int) -> list[Frame]:
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:
            raise MediaError(f"image is {img.width}x{img.height}, over the {MAX_PIXELS} pixel limit")
        n = getattr(img, "n_frames", 1)
        if n <= 1:
            img.load()
            return [Frame(_to_rgb(img), 0.0)]
        # Animated GIF/WebP: sample frames evenly, keep their timestamps.
        wanted = set(_sample_indices(n, max_frames))
        frames: list[Frame] = []
        t = 0.0
        for i, f in enumerate(ImageSequence.Iterator(img)):
            if i in wanted:
                frames.append(Frame(_to_rgb(f), t))
            t += float(f.info.get("duration", 100)) / 1000.0
        return frames
    except MediaError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(f"not a decodable image: {e}") from e


def _decode_video(data: bytes, max_frames: int) -> list[Frame]:
    import av  # noqa: PLC0415  (PyAV is heavy; only videos need it)

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise MediaError("file has no video stream")
            stream = container.streams.video[0]
            decoded = [(f.to_ndarray(format="rgb24"), float(f.time or 0.0)) for f in container.decode(stream)]
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:  # type: ignore[attr-defined]
        raise MediaError(f"not a decodable video: {e}") from e
    if not decoded:
        raise MediaError("video has no decodable frames")
    return [
        Frame(np.ascontiguousarray(decoded[i][0]), decoded[i][1]) for i in _sample_indices(len(decoded), max_frames)
    ]


def _sniff_video(data: bytes) -> bool:
    head = data[:16]
    return head[4:8] == b"ftyp" or head[:4] == b"\x1aE\xdf\xa3" or head[:4] == b"RIFF" and head[8:12] == b"AVI "


def decode_bytes(data: bytes, filename: str | None = None, max_frames: int = DEFAULT_MAX_FRAMES) -> list[Frame]:
    """Decode an image or video held in memory; the content decides, not the name."""
    if not data:
        raise MediaError("empty file")
    if _sniff_video(data) or (filename and is_video_path(filename) and not _looks_like_image(data)):
        return _decode_video(data, max_frames)
    return _decode_image(data, max_frames)


def _looks_like_image(data: bytes) -> bool:
    return data[:8].startswith((b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM")) or data[8:12] == b"WEBP"


def decode_file(path: str | Path, max_frames: int = DEFAULT_MAX_FRAMES) -> list[Frame]:
    """Decode an image or video file into frames."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise MediaError(f"cannot read {p}: {e.strerror or e}") from e
    return decode_bytes(data, p.name, max_frames)


def load_frame(path: str | Path, which: str | float = "middle") -> np.ndarray:
    """One frame of a creative: the image itself, or a video frame ('middle', 'first' or a 0-1 position)."""
    frames = decode_file(path)
    if len(frames) == 1 or which == "first":
        return frames[0].pixels
    pos = 0.5 if which == "middle" else float(which)
    return frames[min(len(frames) - 1, int(pos * len(frames)))].pixels
