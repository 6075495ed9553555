"""Real fonts for synthetic creatives, found on disk without downloading anything.

Looks in the font folder that matplotlib ships (DejaVu, STIX, Computer Modern; a
dependency of the training extras), then the system's fonts, and falls back to
Pillow's embedded font. Nothing is imported: only the files are read.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import ImageFont

# Faces that render Latin text well (some of the files ship symbols only).
_PREFERRED = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono-Bold.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "cmss10.ttf",
    "cmr10.ttf",
)


def _search_dirs() -> list[Path]:
    dirs: list[Path] = []
    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            dirs.append(Path(loc) / "mpl-data" / "fonts" / "ttf")
    dirs += [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype")]
    return [d for d in dirs if d.is_dir()]


@lru_cache(maxsize=1)
def available_fonts() -> tuple[str, ...]:
    """Names of the font files found; empty means only Pillow's built-in font is there."""
    found: dict[str, str] = {}
    for d in _search_dirs():
        for name in _PREFERRED:
            p = d / name
            if name not in found and p.is_file():
                found[name] = str(p)
    return tuple(found[n] for n in _PREFERRED if n in found)


@lru_cache(maxsize=512)
def _load(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size=size)


def font(rng: np.random.Generator, size: int, allowed: tuple[str, ...] | None = None):
    """A random font at ``size`` px; ``allowed`` restricts the choice to these file names."""
    paths = [p for p in available_fonts() if allowed is None or Path(p).name in allowed]
    path = paths[int(rng.integers(len(paths)))] if paths else None
    return _load(path, max(6, int(size)))
