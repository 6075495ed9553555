"""A real-photo benchmark: ad creatives composed from real photographs, degraded by library code training never runs.

The training pool and the test split come from ``creative_qa.synth``; a model (or a rule) tuned on them may
be learning that generator's backgrounds, fonts and defect kernels. This builder shares no code with it
(a test fails if it imports ``creative_qa.synth`` or ``training.degrade``):

- **Photos**: real photographs shipped by Debian wallpaper packages and inside Python wheels, each with its
  licence (``PHOTOS``; ``benchmarks/realphoto_sources.md`` lists them). ``make bench-data`` installs them.
- **Layouts**: its own composer: a photo crop at 1:1, 1.91:1, 4:5 or 9:16 (short side 320-1,080 px, never
  upscaled more than 1.25x), laid out full-bleed, split with a brand panel, or with a text card; a headline
  and body copy in fonts from Debian font packages, a logo mark, a call-to-action button. Some creatives
  have no text, logo or CTA; some are text-heavy (text boxes >= 26 % of the area), the rest stay < 9 %.
- **Defects**: OpenCV, scikit-image and Pillow implementations (several per defect, the one used is in the
  ``methods`` column), each well past its DESIGN.md threshold and checked on the pixels, so no label is a
  borderline call. Every clean original is kept beside its degraded copies (``pair``) for the quality
  ordering; labels are exact (1/0, no blanks).

Made once and cached: ``realphoto.json`` beside the manifest records the builder version, ``n``, ``seed``
and the photo set; a call with the same key returns the manifest without rebuilding.

    python benchmarks/realphoto.py --out /tmp/realphoto --n 1000 --contact-sheet /tmp/realphoto/contact_sheet.png
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import io
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageEnhance, ImageFont
from tqdm import tqdm

try:  # NOTE: optional: the builder names `make bench-data` when they are missing, rather than failing on import
    import cv2
    import skimage
    import skimage.exposure
    import skimage.filters
    import skimage.measure
    import skimage.transform
    import skimage.util

    _LIB_ERROR: str | None = None
except ImportError as e:  # pragma: no cover - exercised on a machine without the bench extras
    cv2 = skimage = None
    _LIB_ERROR = str(e)

from creative_qa.taxonomy import load_taxonomy

log = logging.getLogger("realphoto")

BUILDER_VERSION = 3
MANIFEST = "manifest.csv"
MARKER = "realphoto.json"
ASPECTS = {"1:1": 1.0, "1.91:1": 1.91, "4:5": 0.8, "9:16": 9 / 16}
SHORT_SIDE = (320, 1080)
MAX_UPSCALE = 1.25  # a photo crop is never enlarged more than this (>= 3x would be low_resolution)
MIN_PHOTOS = 30  # fewer than this many Debian photos means the packages are missing
HINT = "run `make bench-data` (apt-installs the photo and font packages, pip-installs opencv and scikit-image)"

# The taxonomy's defect tags that a degraded copy carries; text_heavy is a layout, made by the composer.
DEFECTS = tuple(t for t in load_taxonomy().group("defect") if t != "text_heavy")
# Second defects that keep both labels unambiguous (no noise under a JPEG that would erase it, no watermark
# under a blur that would hide it, no exposure change on top of another).
PAIRS = (
    ("blurry", "jpeg_artifacts"),
    ("blurry", "noisy"),
    ("blurry", "low_contrast"),
    ("low_resolution", "jpeg_artifacts"),
    ("pixelated", "jpeg_artifacts"),
    ("underexposed", "noisy"),
    ("underexposed", "jpeg_artifacts"),
    ("low_contrast", "noisy"),
    ("low_contrast", "jpeg_artifacts"),
    ("letterboxed", "blurry"),
    ("letterboxed", "noisy"),
    ("letterboxed", "jpeg_artifacts"),
    ("letterboxed", "watermark"),
    ("watermark", "jpeg_artifacts"),
    ("watermark", "noisy"),
)
# Quality: 1.0 clean; each defect multiplies by (1 - PENALTY * (0.6 + 0.4 * severity)), severity in [0, 1].
PENALTY = {
    "blurry": 0.45,
    "low_resolution": 0.4,
    "jpeg_artifacts": 0.35,
    "noisy": 0.35,
    "overexposed": 0.4,
    "underexposed": 0.4,
    "low_contrast": 0.35,
    "letterboxed": 0.2,
    "watermark": 0.3,
    "pixelated": 0.45,
    "text_heavy": 0.15,
}
HEAVY_MIN, LIGHT_MAX = 0.26, 0.09  # text-box share of the area: text-heavy >= 0.26, others < 0.09 (threshold 0.20)


class MissingAssets(RuntimeError):
    """The photos, fonts or libraries the builder needs are not installed."""


# ---------------------------------------------------------------------------------------------- photo sources
@dataclass(frozen=True)
class PhotoSource:
    key: str
    package: str  # the Debian package or Python distribution that ships it
    where: str  # a path (or glob, the largest match wins) under /usr/share, or "pkg:<module>/<file>"
    licence: str
    author: str


_L16 = "lomiri-wallpapers-16.04"
_MATE = "mate-backgrounds"
_KDE = "plasma-workspace-wallpapers"
_PAL = "palapeli-data"
_SK = "scikit-image"
PHOTOS: tuple[PhotoSource, ...] = (
    PhotoSource("bridge", _L16, "backgrounds/Bridge_by_Sander_Klootwijk.jpg", "CC-BY-SA-4.0", "Sander Klootwijk"),
    PhotoSource("dragonfly", _L16, "backgrounds/Dragonfly_by_Bolly.jpg", "CC-BY-SA-4.0", "Bolly"),
    PhotoSource("fig", _L16, "backgrounds/Picture_0B_by_freespace.jpg", "CC-BY-4.0", "Trevor Freespace"),
    PhotoSource("brushes", _L16, "backgrounds/Picture_1A_by_freespace.jpg", "CC-BY-4.0", "Trevor Freespace"),
    PhotoSource("wine", _L16, "backgrounds/Wine_by_Jakkub_Mede.jpg", "CC-BY-4.0", "Jakub Mede"),
    PhotoSource("aitzgorri", _L16, "backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi"),
    PhotoSource("lamp_bird", _L16, "backgrounds/free_by_Peter_Nerlich.jpg", "CC-BY-SA-4.0", "Peter Nerlich"),
    PhotoSource("dog", _L16, "backgrounds/friends_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi"),
    PhotoSource("clock", _L16, "backgrounds/greentock_by_Peter_Nerlich.jpg", "CC-BY-SA-4.0", "Peter Nerlich"),
    PhotoSource("stream", _L16, "backgrounds/life_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi"),
    PhotoSource("picos", _L16, "backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi"),
    PhotoSource("dandelions", _L16, "backgrounds/seeding_by_Clements_Engelhardt.jpg", "CC0-1.0", "Clemens Engelhardt"),
    PhotoSource("sunset", _L16, "backgrounds/sunset_by_Aitzol_Berasategi.jpg", "CC-BY-4.0", "Aitzol Berasategi"),
    PhotoSource(
        "kleiber",
        "lomiri-wallpapers-20.04",
        "backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
        "CC-BY-SA-3.0",
        "Lukas Baubkus",
    ),
    PhotoSource("water_drop", _MATE, "backgrounds/mate/nature/Aqua.jpg", "GPL-2+", "Charles Barbin"),
    PhotoSource("leaf", _MATE, "backgrounds/mate/nature/Blinds.jpg", "GPL-2+", "Lennart Poettering, Andrea Cimitan"),
    PhotoSource("dune", _MATE, "backgrounds/mate/nature/Dune.jpg", "GPL-2+", "Marco Cogoni, Hylke Bons"),
    PhotoSource("fresh_flower", _MATE, "backgrounds/mate/nature/FreshFlower.jpg", "GPL-2+", "Jens Ansorg"),
    PhotoSource("garden", _MATE, "backgrounds/mate/nature/Garden.jpg", "GPL-2+", "Charles Barbin"),
    PhotoSource("meadow", _MATE, "backgrounds/mate/nature/GreenMeadow.jpg", "GPL-2+", "Timothy Schellhase"),
    PhotoSource("ladybird", _MATE, "backgrounds/mate/nature/LadyBird.jpg", "GPL-2+", "Charles Barbin"),
    PhotoSource("rain_drops", _MATE, "backgrounds/mate/nature/RainDrops.jpg", "GPL-2+", "blackcombwhistler07"),
    PhotoSource("two_wings", _MATE, "backgrounds/mate/nature/TwoWings.jpg", "GPL-2+", "Charles Barbin, Hylke Bons"),
    PhotoSource("yellow_flower", _MATE, "backgrounds/mate/nature/YellowFlower.jpg", "GPL-2+", "Charles Barbin"),
    PhotoSource("boats_lake", _KDE, "wallpapers/BytheWater/contents/images/2560x1600.jpg", "LGPL-3", "Maciej Wiklo"),
    PhotoSource("pier", _KDE, "wallpapers/ColdRipple/contents/images/2560x1600.jpg", "LGPL-3", "Risto Saukonpää"),
    PhotoSource("cups", _KDE, "wallpapers/ColorfulCups/contents/images/2560x1600.jpg", "LGPL-3", "Dmitri Popov"),
    PhotoSource("dusk_lake", _KDE, "wallpapers/DarkestHour/contents/images/2560x1600.jpg", "LGPL-3", "Risto Saukonpää"),
    PhotoSource("boats", _KDE, "wallpapers/EveningGlow/contents/images/2560x1600.jpg", "LGPL-3", "Ian Hex"),
    PhotoSource(
        "fallen_leaf", _KDE, "wallpapers/FallenLeaf/contents/images/2560x1600.jpg", "LGPL-3", "Martin Klapetek"
    ),
    PhotoSource("facade", _KDE, "wallpapers/Grey/contents/images/2560x1600.jpg", "LGPL-3", "Sigi Sagi"),
    PhotoSource("kite", _KDE, "wallpapers/Kite/contents/images/2560x1600.jpg", "LGPL-3", "Risto Saukonpää"),
    PhotoSource("moss", _KDE, "wallpapers/OneStandsOut/contents/images/2560x1600.jpg", "LGPL-3", "Risto Saukonpää"),
    PhotoSource("forest_path", _KDE, "wallpapers/Path/contents/images/2560x1600.jpg", "LGPL-3", "Risto Saukonpää"),
    PhotoSource(
        "summer_night", _KDE, "wallpapers/summer_1am/contents/images/2560x1600.jpg", "LGPL-3", "Risto Saukonpää"
    ),
    PhotoSource("castle", _PAL, "palapeli/collection/castle-maintenon.jpg", "GFDL", "Eric Pouhier"),
    PhotoSource(
        "suspension_bridge", _PAL, "palapeli/collection/cincinnati-bridge.jpg", "public domain", "Derek Jensen"
    ),
    PhotoSource("citrus", _PAL, "palapeli/collection/citrus-fruits.jpg", "public domain", "US Dept. of Agriculture"),
    PhotoSource("honey_bee", _PAL, "palapeli/collection/european-honey-bee.jpg", "public domain", "John Severns"),
    PhotoSource("chameleon", _PAL, "palapeli/collection/panther-chameleon-female.jpg", "GFDL", "B. Navez and others"),
)
# Photos inside Python wheels (scikit-image's own data files, not its downloaded ones; matplotlib's sample
# data): used beside the Debian ones, and alone they are the tests' fallback when the packages are missing.
BUNDLED: tuple[PhotoSource, ...] = (
    PhotoSource("astronaut", _SK, "pkg:skimage.data/astronaut.png", "public domain", "NASA"),
    PhotoSource("cat", _SK, "pkg:skimage.data/chelsea.png", "CC0-1.0", "Stefan van der Walt"),
    PhotoSource("coffee", _SK, "pkg:skimage.data/coffee.png", "CC0-1.0", "Rachel Michetti"),
    PhotoSource("rocket", _SK, "pkg:skimage.data/rocket.jpg", "public domain", "SpaceX"),
    PhotoSource(
        "motorcycle",
        _SK,
        "pkg:skimage.data/motorcycle_left.png",
        "BSD-3-Clause (scikit-image; Middlebury 2014 stereo set)",
        "D. Scharstein et al.",
    ),
    PhotoSource("cameraman", _SK, "pkg:skimage.data/camera.png", "CC0-1.0", "Lav Varshney"),
    PhotoSource("coins", _SK, "pkg:skimage.data/coins.png", "public domain", "Brooklyn Museum"),
    PhotoSource("grace_hopper", "matplotlib", "pkg:matplotlib/mpl-data/sample_data/grace_hopper.jpg", "public domain",
                "US Navy"),
)  # fmt: skip


@dataclass
class Photo:
    source: PhotoSource
    path: Path
    _pixels: Image.Image | None = field(default=None, repr=False)

    def image(self) -> Image.Image:
        """The photo as RGB, its short side cut to 1,400 px (enough for a 1,080 px creative at <= 1.25x)."""
        if self._pixels is None:
            im = Image.open(self.path)
            s = 1400 / min(im.size)
            if s < 1:
                im.draft("RGB", (int(im.width * s), int(im.height * s)))  # JPEG: decode at a reduced scale
            im = im.convert("RGB")
            s = 1400 / min(im.size)
            if s < 1:
                im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)
            self._pixels = im
        return self._pixels


def _resolve(src: PhotoSource, root: Path = Path("/usr/share")) -> Path | None:
    if src.where.startswith("pkg:"):
        mod, _, rel = src.where[4:].partition("/")
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.submodule_search_locations:
            return None
        p = Path(next(iter(spec.submodule_search_locations))) / rel
        return p if p.is_file() else None
    hits = sorted(glob.glob(str(root / src.where)), key=lambda p: Path(p).stat().st_size)
    return Path(hits[-1]) if hits else None


def find_photos(allow_fallback: bool = False) -> list[Photo]:
    """The photos installed here; raises MissingAssets naming `make bench-data` when the Debian set is missing
    (unless ``allow_fallback``: then whatever is there, the wheels' bundled photos at least)."""
    debian = [Photo(s, p) for s in PHOTOS if (p := _resolve(s)) is not None]
    bundled = [Photo(s, p) for s in BUNDLED if (p := _resolve(s)) is not None]
    if len(debian) < MIN_PHOTOS and not allow_fallback:
        missing = sorted({s.package for s in PHOTOS if _resolve(s) is None})
        raise MissingAssets(f"only {len(debian)} of {len(PHOTOS)} photos found (missing: {', '.join(missing)}); {HINT}")
    photos = debian + bundled
    if len(photos) < 3:
        raise MissingAssets(f"only {len(photos)} photos found; {HINT}")
    return photos


# ---------------------------------------------------------------------------------------------------- fonts
FONT_DIRS = ("/usr/share/fonts/truetype", "/usr/share/fonts/opentype")
# (family, Debian package, headline face, body face); none of these is a font the synthetic generator uses.
_LIB, _RB = "liberation2/Liberation", "roboto/unhinted/"
FONTS = (
    ("Liberation Sans", "fonts-liberation2", f"{_LIB}Sans-Bold.ttf", f"{_LIB}Sans-Regular.ttf"),
    ("Liberation Serif", "fonts-liberation2", f"{_LIB}Serif-Bold.ttf", f"{_LIB}Serif-Regular.ttf"),
    ("Lato", "fonts-lato", "lato/Lato-Black.ttf", "lato/Lato-Regular.ttf"),
    ("Lato Light", "fonts-lato", "lato/Lato-Bold.ttf", "lato/Lato-Light.ttf"),
    ("Roboto", "fonts-roboto-unhinted", f"{_RB}RobotoTTF/Roboto-Black.ttf", f"{_RB}RobotoTTF/Roboto-Regular.ttf"),
    (
        "Roboto Condensed",
        "fonts-roboto-unhinted",
        f"{_RB}RobotoCondensed-Bold.ttf",
        f"{_RB}RobotoCondensed-Regular.ttf",
    ),
    ("Open Sans", "fonts-open-sans", "open-sans/OpenSans-ExtraBold.ttf", "open-sans/OpenSans-Regular.ttf"),
    ("Bebas Neue", "fonts-bebas-neue", "bebas-neue/BebasNeue-Bold.otf", "open-sans/OpenSans-Light.ttf"),
    ("League Spartan", "fonts-league-spartan", "league-spartan/LeagueSpartan-Bold.otf", "lato/Lato-Regular.ttf"),
    ("Comfortaa", "fonts-comfortaa", "comfortaa/Comfortaa-Bold.ttf", "comfortaa/Comfortaa-Regular.ttf"),
)
DEBIAN_PACKAGES = sorted({s.package for s in PHOTOS} | {f[1] for f in FONTS})
PYTHON_PACKAGES = ("opencv-python-headless", "scikit-image")


def _font_file(rel: str) -> str | None:
    for d in FONT_DIRS:
        if (Path(d) / rel).is_file():
            return str(Path(d) / rel)
    return None


def find_fonts(allow_fallback: bool = False) -> list[tuple[str, str, str]]:
    """(family, headline file, body file) for each family installed; DejaVu only as the tests' fallback."""
    fams = [(n, h, b) for n, _, hr, br in FONTS if (h := _font_file(hr)) and (b := _font_file(br))]
    if len(fams) >= 5:
        return fams
    if allow_fallback:
        cands = [_font_file("dejavu/DejaVuSans-Bold.ttf"), _font_file("dejavu/DejaVuSans.ttf")]
        spec = importlib.util.find_spec("matplotlib")
        if spec and spec.submodule_search_locations:
            ttf = Path(next(iter(spec.submodule_search_locations))) / "mpl-data/fonts/ttf"
            cands += [str(ttf / "DejaVuSans-Bold.ttf"), str(ttf / "DejaVuSans.ttf")]
        files = [c for c in cands if c and Path(c).is_file()]
        if len(files) >= 2 or fams:
            return fams + ([("DejaVu Sans", files[0], files[1])] if len(files) >= 2 else [])
    missing = sorted({f[1] for f in FONTS if not (_font_file(f[2]) and _font_file(f[3]))})
    raise MissingAssets(f"only {len(fams)} font families found (missing: {', '.join(missing)}); {HINT}")


def _require_libs() -> None:
    if _LIB_ERROR is not None:
        raise MissingAssets(f"{_LIB_ERROR}; {HINT}")


# -------------------------------------------------------------------------------------------------- content
BRANDS = (
    "Northwind",
    "Alder & Co",
    "Lumen",
    "Peak Supply",
    "Harbor",
    "Brightside",
    "Fieldnote",
    "Kestrel",
    "Oakline",
    "Marlow",
    "Verde",
    "Solstice",
    "Tidewater",
    "Quill",
    "Ember",
    "Juniper",
    "Atlas",
    "Corvid",
    "Meridian",
    "Pilot",
)
HEADLINES = (
    "Summer Sale",
    "New Season, New Look",
    "Up to 50% Off",
    "Fresh Every Morning",
    "Made to Last",
    "Book Your Escape",
    "Weekend Deals",
    "Taste the Difference",
    "Limited Edition",
    "Free Delivery Today",
    "Your Next Adventure",
    "Back in Stock",
    "Meet the New Range",
    "Handmade with Care",
    "Open Late This Week",
    "Save Big This Spring",
    "Find Your Calm",
    "Join 10,000 Happy Customers",
    "The Perfect Gift",
    "Stay Curious",
)
BODY = (
    "Discover the collection everyone is talking about.",
    "Order before noon for same-day dispatch.",
    "Members save an extra 10% on every order.",
    "Sustainably sourced and carefully packed.",
    "Only while stocks last. Terms apply.",
    "Tickets from 29 per person, this month only.",
    "Free returns within 30 days, no questions asked.",
    "Rated five stars by our customers.",
    "Visit our store or shop online any time.",
    "New arrivals every week, straight from the makers.",
)
LONG_COPY = (
    "Our biggest event of the year is here with hundreds of products reduced across every department. "
    "Choose from new arrivals, customer favourites and exclusive online lines. Members get early access, "
    "free standard delivery on all orders and an extra ten percent off selected items. Offer ends Sunday at "
    "midnight, while stocks last, subject to availability. See the website for full terms and conditions. "
    "Prices shown include tax. Returns are free within thirty days of delivery. Gift cards are excluded."
)
CTAS = ("Shop now", "Learn more", "Sign up", "Book now", "Get the app", "Order today", "Try it free", "See offers")
WATERMARKS = ("SAMPLE", "PREVIEW", "(c) PhotoBank", "DRAFT", "NOT FOR USE", "(c) stockimg", "PROOF")
COLOURS = (
    (196, 30, 58), (20, 60, 120), (16, 112, 86), (232, 110, 20), (92, 44, 140), (0, 128, 140), (30, 30, 34),
    (245, 238, 224), (250, 200, 40), (180, 70, 120), (60, 90, 60), (230, 230, 235),
)  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """Everything that decides how one creative looks, so it can be rendered again at another size."""

    photo: int
    aspect: str
    layout: str  # full | split | card
    split: float  # share of the canvas the photo takes in a split layout
    flip: bool  # split: the panel before the photo
    zoom: float  # crop size relative to the largest crop of the right aspect
    centre: tuple[float, float]
    brand: tuple[int, int, int]
    accent: tuple[int, int, int]
    font: int
    headline: str | None
    body: str | None
    cta: str | None
    logo: str | None  # circle | square | hexagon | diamond | ring
    brand_name: str
    wordmark: bool
    logo_right: bool
    heavy: bool
    text_scale: float = 1.0


def _luma(x: np.ndarray) -> np.ndarray:
    return x[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _dark(c: tuple[int, int, int]) -> bool:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 150


def _size(aspect: float, short: int) -> tuple[int, int]:
    return (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))


def _max_short(photo: Image.Image, aspect: float) -> int:
    """The largest short side a creative of this aspect can have from this photo within MAX_UPSCALE."""
    pw, ph = photo.size
    cw, ch = (ph * aspect, ph) if pw / ph > aspect else (pw, pw / aspect)
    return int(MAX_UPSCALE * min(cw, ch))


class Infeasible(ValueError):
    pass


def _crop(photo: Image.Image, spec: Spec, w: int, h: int) -> Image.Image:
    pw, ph = photo.size
    ar = w / h
    cw, ch = (ph * ar, ph) if pw / ph > ar else (pw, pw / ar)
    zoom = max(spec.zoom, w / (MAX_UPSCALE * cw))
    if zoom > 1.0001:
        raise Infeasible(f"{w}x{h} from a {pw}x{ph} photo needs more than {MAX_UPSCALE}x")
    cw, ch = cw * min(zoom, 1.0), ch * min(zoom, 1.0)
    x0 = spec.centre[0] * (pw - cw)
    y0 = spec.centre[1] * (ph - ch)
    return photo.resize((w, h), Image.Resampling.LANCZOS, box=(x0, y0, x0 + cw, y0 + ch))


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


@dataclass
class _Item:
    text: str
    font: ImageFont.FreeTypeFont
    xy: tuple[float, float]
    box: tuple[int, int, int, int] | None = None  # a CTA button behind the text


def _layout_text(draw, spec: Spec, fonts, region, s: int, scale: float):
    """Headline, body and CTA stacked in ``region``: (items, text-box area, fits)."""
    x0, y0, x1, y1 = region
    width = x1 - x0
    head_f = ImageFont.truetype(fonts[1], max(8, int(s * (0.085 if spec.heavy else 0.075) * scale)))
    body_f = ImageFont.truetype(fonts[2], max(7, int(s * (0.042 if spec.heavy else 0.036) * scale)))
    cta_f = ImageFont.truetype(fonts[1], max(7, int(s * 0.036 * min(scale, 1.3))))
    items: list[tuple[str, ImageFont.FreeTypeFont, float]] = []  # (text, font, line height)
    if spec.headline:
        for line in _wrap(draw, spec.headline, head_f, width)[:3]:
            items.append((line, head_f, head_f.size * 1.12))
    gap_after_head = head_f.size * 0.35 if spec.headline else 0
    body_lines = _wrap(draw, spec.body, body_f, width) if spec.body else []
    cta_h = cta_f.size * 2.0 if spec.cta else 0
    room = y1 - y0 - sum(h for _, _, h in items) - gap_after_head - (cta_h + cta_f.size * 0.6 if spec.cta else 0)
    if not spec.heavy:
        body_lines = body_lines[:2]
    fit_body = max(0, int(room // (body_f.size * 1.3)))
    fits = room >= 0 and (spec.heavy or fit_body >= len(body_lines))
    body_lines = body_lines[:fit_body]
    total = sum(h for _, _, h in items) + gap_after_head + len(body_lines) * body_f.size * 1.3
    total += cta_h + cta_f.size * 0.6 if spec.cta else 0
    y = y1 - total if spec.layout != "split" else y0 + max(0.0, (y1 - y0 - total) / 2)
    out: list[_Item] = []
    area = 0.0
    for text, f, lh in items:
        out.append(_Item(text, f, (x0, y)))
        y += lh
    y += gap_after_head
    for line in body_lines:
        out.append(_Item(line, body_f, (x0, y)))
        y += body_f.size * 1.3
    if spec.cta:
        y += cta_f.size * 0.6
        tw = draw.textlength(spec.cta, font=cta_f)
        bw = tw + cta_f.size * 2.4
        out.append(_Item(spec.cta, cta_f, (x0 + cta_f.size * 1.2, y + cta_f.size * 0.45), (x0, y, x0 + bw, y + cta_h)))
    for it in out:
        left, top, right, bottom = draw.textbbox(it.xy, it.text, font=it.font)
        area += (right - left) * (bottom - top)
    return out, area, fits


def render(spec: Spec, w: int, h: int, photos: list[Photo], fonts) -> tuple[np.ndarray, float]:
    """The creative at ``w`` x ``h``: (uint8 RGB pixels, share of the area covered by text boxes)."""
    photo = photos[spec.photo].image()
    s = min(w, h)
    m = round(0.055 * s)  # margin
    canvas = Image.new("RGB", (w, h), spec.brand)
    text_on_photo = spec.layout != "split"
    if spec.layout == "split":
        if w / h >= 1.3:
            pw = round(w * spec.split)
            px = w - pw if spec.flip else 0
            canvas.paste(_crop(photo, spec, pw, h), (px, 0))
            panel = (m, m, w - pw - m, h - m) if spec.flip else (pw + m, m, w - m, h - m)
        else:
            ph = round(h * spec.split)
            canvas.paste(_crop(photo, spec, w, ph), (0, 0))
            panel = (m, ph + m // 2, w - m, h - m)
        # a soft vertical gradient on the panel, as designers do, so it is not a flat bar
        a = np.asarray(canvas, dtype=np.float32)
        rows = np.linspace(1.0, 0.86, h, dtype=np.float32)[:, None, None]
        x0, y0, x1, y1 = panel
        gy0, gx0 = max(0, y0 - m), max(0, x0 - m)
        region = a[gy0 : y1 + m, gx0 : x1 + m]
        region[:] = region * rows[gy0 : y1 + m]
        canvas = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        text_colour = (255, 255, 255) if _dark(spec.brand) else (24, 24, 28)
        region = panel
    else:
        canvas = _crop(photo, spec, w, h)
        if spec.layout == "full" and (spec.headline or spec.body or spec.cta):
            a = np.asarray(canvas, dtype=np.float32)
            start = 0.18 if spec.heavy else 0.45
            ramp = np.clip((np.arange(h) / h - start) / (1 - start), 0, 1) ** 1.3 * 0.62
            a *= 1 - ramp[:, None, None]
            canvas = Image.fromarray(a.astype(np.uint8))
        top = 0.2 if spec.heavy else 0.5
        region = (m, round(h * top), w - m, h - m)
        text_colour = (255, 255, 255)
        if spec.layout == "card":
            pad = round(0.03 * s)
            card = Image.new("RGBA", (w, h), (0, 0, 0, 0))
            ImageDraw.Draw(card).rounded_rectangle(
                (m - pad, round(h * top) - pad, w - m + pad, h - m + pad), radius=pad * 2, fill=(246, 246, 244, 225)
            )
            canvas = Image.alpha_composite(canvas.convert("RGBA"), card).convert("RGB")
            region = (m + pad, round(h * top) + pad, w - m - pad, h - m - pad)
            text_colour = (24, 24, 28)
    draw = ImageDraw.Draw(canvas)
    fam = fonts[spec.font % len(fonts)]
    area = 0.0
    # logo: a mark (and the brand's name beside it) in a top corner
    if spec.logo:
        ls = round(0.1 * s)
        lx = w - m - ls if spec.logo_right else m
        ly = m
        box = (lx, ly, lx + ls, ly + ls)
        ring = (255, 255, 255) if text_on_photo or _dark(spec.brand) else (24, 24, 28)
        fill = spec.accent
        if spec.logo == "circle":
            draw.ellipse(box, fill=fill, outline=ring, width=max(2, ls // 14))
        elif spec.logo == "square":
            draw.rounded_rectangle(box, radius=ls // 5, fill=fill, outline=ring, width=max(2, ls // 14))
        elif spec.logo == "ring":
            draw.ellipse(box, outline=fill, width=max(3, ls // 5))
            draw.ellipse((lx + ls // 3, ly + ls // 3, lx + 2 * ls // 3, ly + 2 * ls // 3), fill=ring)
        else:
            n = 6 if spec.logo == "hexagon" else 4
            cx, cy, r = lx + ls / 2, ly + ls / 2, ls / 2
            pts = [(cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n)) for k in range(n)]
            draw.polygon(pts, fill=fill, outline=ring, width=max(2, ls // 14))
        if spec.headline and spec.logo != "ring":  # a letter in the mark is text: only where there is text
            lf = ImageFont.truetype(fam[1], max(8, int(ls * 0.55)))
            draw.text((lx + ls / 2, ly + ls / 2), spec.brand_name[0], font=lf, fill=(255, 255, 255), anchor="mm")
        if spec.wordmark and spec.headline:
            wf = ImageFont.truetype(fam[1], max(8, int(ls * 0.42)))
            wx = lx - round(0.02 * s) if spec.logo_right else lx + ls + round(0.02 * s)
            anchor = "rm" if spec.logo_right else "lm"
            on_panel = spec.layout == "split" and w / h >= 1.3 and spec.logo_right != spec.flip
            colour = ring if on_panel else (255, 255, 255)
            stroke = 0 if on_panel else max(1, wf.size // 18)
            draw.text((wx, ly + ls / 2), spec.brand_name, font=wf, fill=colour, anchor=anchor, stroke_width=stroke,
                      stroke_fill=(40, 40, 40))  # fmt: skip
            left, top, right, bottom = draw.textbbox((wx, ly + ls / 2), spec.brand_name, font=wf, anchor=anchor)
            area += (right - left) * (bottom - top)
        if lx < region[2] and lx + ls > region[0] or spec.wordmark and spec.headline:  # the logo's row is taken
            region = (region[0], max(region[1], ly + ls + m // 2), region[2], region[3])
    if spec.headline or spec.body or spec.cta:
        items, a_text, fits = _layout_text(draw, spec, fam, region, s, spec.text_scale)
        if not fits:
            raise Infeasible("the text does not fit")
        area += a_text
        for it in items:
            if it.box is not None:
                draw.rounded_rectangle(it.box, radius=round((it.box[3] - it.box[1]) / 2), fill=spec.accent)
                colour = (255, 255, 255) if _dark(spec.accent) else (20, 20, 20)
            else:
                colour = text_colour
            stroke = max(1, it.font.size // 30) if text_on_photo and spec.layout == "full" and it.box is None else 0
            draw.text(it.xy, it.text, font=it.font, fill=colour, stroke_width=stroke, stroke_fill=(30, 30, 30))
    return np.asarray(canvas, dtype=np.uint8).copy(), area / (w * h)


def _fit_text(spec: Spec, w: int, h: int, photos, fonts) -> tuple[Spec, np.ndarray, float]:
    """Scale the text until the text-box share is clearly on its side of the 20 % threshold."""
    scale = 1.0
    for _ in range(12):
        sp = replace(spec, text_scale=scale)
        try:
            img, frac = render(sp, w, h, photos, fonts)
        except Infeasible:
            if not spec.heavy:
                scale *= 0.85
                continue
            raise
        if spec.heavy and frac < HEAVY_MIN:
            scale *= 1.1
        elif not spec.heavy and frac >= LIGHT_MAX:
            scale *= 0.85
        else:
            return sp, img, frac
    raise Infeasible("no text size lands clearly on one side of the text_heavy threshold")


def _clean_ok(img: np.ndarray) -> bool:
    """A clean original is unambiguous: not dark, not clipped, not flat."""
    y = _luma(img)
    clipped = float(np.mean(np.all(img >= 250, axis=-1)))
    return 72 <= y.mean() <= 190 and clipped <= 0.05 and y.std() >= 30


def _sample_spec(rng: np.random.Generator, photos, fonts) -> tuple[Spec, int, int, np.ndarray, float]:
    for _ in range(50):
        pi = int(rng.integers(len(photos)))
        aspect = str(rng.choice(list(ASPECTS)))
        cap = _max_short(photos[pi].image(), ASPECTS[aspect])
        if cap < SHORT_SIDE[0]:
            continue
        short = int(np.exp(rng.uniform(np.log(SHORT_SIDE[0]), np.log(SHORT_SIDE[1] + 1))))
        short = max(SHORT_SIDE[0], min(short, cap, SHORT_SIDE[1]))
        w, h = _size(ASPECTS[aspect], short)
        has_text = rng.random() < 0.85
        heavy = has_text and rng.random() < 0.2
        brand = COLOURS[int(rng.integers(len(COLOURS)))]
        accent = COLOURS[int(rng.integers(len(COLOURS)))]
        if accent == brand:
            accent = (230, 60, 40) if brand != (230, 60, 40) else (20, 60, 120)
        spec = Spec(
            photo=pi,
            aspect=aspect,
            layout=str(rng.choice(["full", "split", "card"], p=[0.45, 0.35, 0.2])),
            split=float(rng.uniform(0.55, 0.66)),
            flip=bool(rng.random() < 0.3),
            zoom=float(rng.uniform(0.55, 1.0)),
            centre=(float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.15, 0.85))),
            brand=brand,
            accent=accent,
            font=int(rng.integers(len(fonts))),
            headline=str(rng.choice(HEADLINES)) if has_text else None,
            body=(LONG_COPY if heavy else " ".join(rng.choice(BODY, size=2, replace=False)))
            if has_text and (heavy or rng.random() < 0.7)
            else None,
            cta=str(rng.choice(CTAS)) if has_text and rng.random() < 0.75 else None,
            logo=str(rng.choice(["circle", "square", "hexagon", "diamond", "ring"])) if rng.random() < 0.72 else None,
            brand_name=str(rng.choice(BRANDS)),
            wordmark=bool(rng.random() < 0.6),
            logo_right=bool(rng.random() < 0.4),
            heavy=heavy,
        )
        if (not has_text or heavy) and spec.layout == "split":  # a panel is too small for a page of copy
            spec = replace(spec, layout="full")
        try:
            spec, img, frac = _fit_text(spec, w, h, photos, fonts)
        except Infeasible:
            continue
        if _clean_ok(img):
            return spec, w, h, img, frac
    raise RuntimeError("could not lay out a clean creative in 50 tries")


# ------------------------------------------------------------------------------------------------- defects
# Each returns (pixels, method, severity in [0, 1]); ``s`` is the creative's short side.
def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def blurry(x: np.ndarray, rng: np.random.Generator, s: int):
    rel = rng.uniform(0.012, 0.025)  # sigma 2x-4x DESIGN's 0.6 % of the short side
    sigma = rel * s
    kind = rng.choice(["cv2.GaussianBlur", "cv2.filter2D disc", "cv2.filter2D motion", "cv2.stackBlur", "skimage"])
    if kind == "cv2.GaussianBlur":
        out = cv2.GaussianBlur(x, (0, 0), sigmaX=sigma)
    elif kind == "cv2.filter2D disc":
        r = 2.0 * sigma  # a disc of radius r has sigma r / 2
        k = int(math.ceil(r))
        ker = np.zeros((2 * k + 1, 2 * k + 1), np.float32)
        cv2.circle(ker, (k, k), int(round(r)), 1.0, thickness=-1, lineType=cv2.LINE_AA)
        out = cv2.filter2D(x, -1, ker / ker.sum(), borderType=cv2.BORDER_REFLECT)
    elif kind == "cv2.filter2D motion":
        length = sigma * math.sqrt(12)  # a line of length L has sigma L / sqrt(12) along it
        k = int(math.ceil(length / 2))
        ker = np.zeros((2 * k + 1, 2 * k + 1), np.float32)
        t = rng.uniform(0, math.pi)
        dx, dy = math.cos(t) * length / 2, math.sin(t) * length / 2
        cv2.line(ker, (round(k - dx), round(k - dy)), (round(k + dx), round(k + dy)), 1.0, 1, cv2.LINE_AA)
        out = cv2.filter2D(x, -1, ker / ker.sum(), borderType=cv2.BORDER_REFLECT)
    elif kind == "cv2.stackBlur":
        k = 2 * int(round(sigma * math.sqrt(6))) + 1  # a triangle of half-width r has sigma r / sqrt(6)
        out = cv2.stackBlur(x, (k, k))
    else:
        out = _u8(skimage.filters.gaussian(x, sigma=sigma, channel_axis=-1, preserve_range=True))
    return out, f"blur {kind} sigma={rel * 100:.2f}%", (rel - 0.012) / 0.013


def low_resolution(x: np.ndarray, rng: np.random.Generator, s: int):
    f = rng.uniform(3.5, 6.0)
    h, w = x.shape[:2]
    sw, sh = max(8, round(w / f)), max(8, round(h / f))
    kind = rng.choice(["cv2 area/linear", "cv2 area/cubic", "cv2 area/lanczos4", "skimage order1", "skimage order3",
                       "PIL hamming"])  # fmt: skip
    if kind.startswith("cv2"):
        up = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "lanczos4": cv2.INTER_LANCZOS4}[kind.split("/")[1]]
        out = cv2.resize(cv2.resize(x, (sw, sh), interpolation=cv2.INTER_AREA), (w, h), interpolation=up)
    elif kind.startswith("skimage"):
        order = int(kind[-1])
        small = skimage.transform.resize(x, (sh, sw), order=order, anti_aliasing=True, preserve_range=True)
        out = _u8(skimage.transform.resize(small, (h, w), order=order, preserve_range=True))
    else:
        im = Image.fromarray(x).resize((sw, sh), Image.Resampling.HAMMING)
        out = np.asarray(im.resize((w, h), Image.Resampling.HAMMING))
    return out, f"lowres {kind} x{f:.1f}", (f - 3.5) / 2.5


def pixelated(x: np.ndarray, rng: np.random.Generator, s: int):
    rel = rng.uniform(0.035, 0.06)  # blocks 1.75x-3x DESIGN's 2 % of the short side
    b = max(2, int(round(rel * s)))
    h, w = x.shape[:2]
    kind = rng.choice(["cv2 area/nearest", "skimage block_reduce", "PIL nearest/nearest"])
    if kind == "cv2 area/nearest":
        small = cv2.resize(x, (max(1, w // b), max(1, h // b)), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    elif kind == "skimage block_reduce":
        small = skimage.measure.block_reduce(x, (b, b, 1), np.mean)
        out = _u8(np.repeat(np.repeat(small, b, 0), b, 1)[:h, :w])
    else:
        im = Image.fromarray(x).resize((max(1, w // b), max(1, h // b)), Image.Resampling.NEAREST)
        out = np.asarray(im.resize((w, h), Image.Resampling.NEAREST))
    return out, f"pixelate {kind} block={rel * 100:.1f}%", (rel - 0.035) / 0.025


def jpeg(x: np.ndarray, rng: np.random.Generator, s: int):
    q = int(rng.integers(4, 16))  # DESIGN: <= 20
    kind = rng.choice(["cv2 4:2:0", "cv2 4:4:4", "cv2 4:2:2", "PIL 4:2:2 progressive"])
    if kind.startswith("cv2"):
        sf = {"4:2:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "4:4:4": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
              "4:2:2": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422}[kind[4:]]  # fmt: skip
        params = [cv2.IMWRITE_JPEG_QUALITY, q, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sf]
        data = cv2.imencode(".jpg", x[..., ::-1], params)[1].tobytes()
    else:
        b = io.BytesIO()
        Image.fromarray(x).save(b, format="JPEG", quality=q, subsampling=1, progressive=True, optimize=True)
        data = b.getvalue()
    out = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return out, f"jpeg {kind} q={q}", (15 - q) / 11, data


def noisy(x: np.ndarray, rng: np.random.Generator, s: int):
    std = rng.uniform(24, 40) / 255  # 2x-3.3x DESIGN's 12/255
    f = x.astype(np.float64) / 255
    kind = rng.choice(["skimage gaussian", "luma gaussian", "poisson", "skimage speckle", "cv2.randu"])
    seed = int(rng.integers(2**31))
    for _ in range(4):  # raise the strength until the measured std (after clipping) is well past the threshold
        if kind == "skimage gaussian":
            out = skimage.util.random_noise(f, mode="gaussian", var=std**2, rng=seed)
        elif kind == "luma gaussian":
            out = f + np.random.default_rng(seed).normal(0, std, f.shape[:2])[..., None]
        elif kind == "poisson":
            peak = np.clip(f.mean(), 0.2, 0.8) / std**2  # photon count giving this std at the mean level
            out = np.random.default_rng(seed).poisson(f * peak) / peak
        elif kind == "skimage speckle":
            out = skimage.util.random_noise(f, mode="speckle", var=(std / max(f.mean(), 0.2)) ** 2, rng=seed)
        else:
            n = np.empty(x.shape, np.float32)
            cv2.setRNGSeed(seed)
            cv2.randu(n, -std * math.sqrt(3), std * math.sqrt(3))  # uniform with this std
            out = f + n
        out = _u8(np.clip(out, 0, 1) * 255)
        got = float((out.astype(np.float32) - x).std())
        if got >= 20:
            break
        std *= 1.3
    return out, f"noise {kind} std={got:.1f}/255", min(1.0, (got - 20) / 20)


def overexposed(x: np.ndarray, rng: np.random.Generator, s: int):
    target = rng.uniform(0.4, 0.65)  # share clipped near white; DESIGN: >= 25 %
    kind = rng.choice(["cv2.convertScaleAbs", "skimage gamma+gain", "PIL Brightness"])
    lo = x.min(axis=-1).astype(np.float32)
    if kind == "skimage gamma+gain":
        g = rng.uniform(0.5, 0.75)
        x = skimage.exposure.adjust_gamma(x, gamma=g)
        lo = x.min(axis=-1).astype(np.float32)
    gain = 252.0 / max(1.0, float(np.quantile(lo, 1 - target)))
    if kind == "PIL Brightness":
        out = np.asarray(ImageEnhance.Brightness(Image.fromarray(x)).enhance(gain))
    else:
        out = cv2.convertScaleAbs(x, alpha=gain, beta=0)
    clipped = float(np.mean(np.all(out >= 250, axis=-1)))
    return out, f"over {kind} clipped={clipped:.2f}", (clipped - 0.4) / 0.25


def underexposed(x: np.ndarray, rng: np.random.Generator, s: int):
    target = rng.uniform(22, 42)  # mean luma; DESIGN: <= 60
    kind = rng.choice(["cv2.convertScaleAbs", "skimage gamma", "PIL Brightness", "cv2.LUT curve"])
    mean = float(_luma(x).mean())
    if kind == "skimage gamma":
        g = 1.0
        out = x
        for _ in range(30):
            g *= 1.15
            out = skimage.exposure.adjust_gamma(x, gamma=g)
            if _luma(out).mean() <= target:
                break
    elif kind == "PIL Brightness":
        out = np.asarray(ImageEnhance.Brightness(Image.fromarray(x)).enhance(target / mean))
    elif kind == "cv2.LUT curve":  # a shadow-crushing power curve, then a gain to the target mean
        curve = 255 * (np.arange(256) / 255) ** 1.6
        m1 = float(_luma(cv2.LUT(x, _u8(curve))).mean())
        out = cv2.LUT(x, _u8(curve * target / max(m1, 1.0)))
    else:
        out = cv2.convertScaleAbs(x, alpha=target / mean, beta=0)
    got = float(_luma(out).mean())
    return out, f"under {kind} mean={got:.0f}", (42 - got) / 20


def low_contrast(x: np.ndarray, rng: np.random.Generator, s: int):
    k = rng.uniform(0.12, 0.26)  # luma std kept; DESIGN: <= 35 %
    kind = rng.choice(["PIL Contrast", "skimage rescale_intensity", "cv2.addWeighted haze", "skimage sigmoid"])
    y0 = float(_luma(x).std())
    if kind == "PIL Contrast":
        out = np.asarray(ImageEnhance.Contrast(Image.fromarray(x)).enhance(k))
    elif kind == "skimage rescale_intensity":
        mid = rng.uniform(100, 160)
        out = _u8(skimage.exposure.rescale_intensity(x.astype(np.float32), in_range=(0, 255),
                                                     out_range=(mid - 127.5 * k, mid + 127.5 * k)))  # fmt: skip
    elif kind == "cv2.addWeighted haze":
        haze = np.full_like(x, int(rng.integers(150, 225)))
        out = cv2.addWeighted(x, k, haze, 1 - k, 0)
    else:
        # NOTE: a sigmoid with a small gain is nearly linear: its slope at the cutoff is gain / 4
        out = _u8(255 * skimage.exposure.adjust_sigmoid(x.astype(np.float32) / 255, cutoff=0.5, gain=4 * k))
    ratio = float(_luma(out).std()) / max(y0, 1e-6)
    return out, f"contrast {kind} std_ratio={ratio:.2f}", (0.26 - ratio) / 0.14


def watermark(x: np.ndarray, rng: np.random.Generator, s: int, fonts=None):
    alpha = rng.uniform(0.28, 0.45)  # DESIGN: 0.15-0.5, kept clearly visible
    h, w = x.shape[:2]
    word = str(rng.choice(WATERMARKS))
    colour = (255, 255, 255) if _luma(x).mean() < 150 else (30, 30, 30)  # a mark meant to be seen
    kind = rng.choice(["PIL tiled diagonal", "PIL centred", "cv2 Hershey tiled"])
    if kind.startswith("PIL"):
        fam = fonts[int(rng.integers(len(fonts)))]
        big = kind == "PIL centred"
        f = ImageFont.truetype(fam[1], max(10, int(s * (0.24 if big else 0.08))))
        side = int(math.hypot(w, h)) + 4
        layer = Image.new("L", (side, side), 0)
        d = ImageDraw.Draw(layer)
        if big:
            d.text((side / 2, side / 2), word, font=f, fill=255, anchor="mm", stroke_width=max(1, f.size // 25))
        else:
            step_x = d.textlength(word, font=f) + f.size * 1.5
            for j, yy in enumerate(np.arange(0, side, f.size * 3.2)):
                for xx in np.arange(-(j % 2) * step_x / 2, side, step_x):
                    d.text((xx, yy), word, font=f, fill=255)
        layer = layer.rotate(float(rng.uniform(20, 40)), resample=Image.Resampling.BICUBIC)
        l0, t0 = (side - w) // 2, (side - h) // 2
        mask = np.asarray(layer.crop((l0, t0, l0 + w, t0 + h)), dtype=np.float32)[..., None] / 255 * alpha
        out = _u8(x * (1 - mask) + np.array(colour, np.float32) * mask)
    else:
        overlay = x.copy()
        scale = s / 420
        th = max(1, int(round(2 * scale)))
        (tw, tth), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_DUPLEX, scale, th)
        for j, yy in enumerate(range(tth + 4, h, int(tth * 3.5))):
            for xx in range(-(j % 2) * (tw // 2), w, int(tw * 1.6)):
                cv2.putText(overlay, word, (xx, yy), cv2.FONT_HERSHEY_DUPLEX, scale, colour, th, cv2.LINE_AA)
        out = cv2.addWeighted(overlay, alpha, x, 1 - alpha, 0)
    return out, f"watermark {kind} alpha={alpha:.2f}", (alpha - 0.28) / 0.17


OPS = {
    "blurry": blurry,
    "low_resolution": low_resolution,
    "pixelated": pixelated,
    "noisy": noisy,
    "overexposed": overexposed,
    "underexposed": underexposed,
    "low_contrast": low_contrast,
    "watermark": watermark,
}
# The order defects are made in: pixel damage to the content, then the bars, then the file's encoding.
ORDER = ("overexposed", "underexposed", "low_contrast", "blurry", "low_resolution", "pixelated", "watermark", "noisy",
         "letterboxed", "jpeg_artifacts")  # fmt: skip


def letterbox(spec: Spec, w: int, h: int, rng, photos, fonts):
    """The same design made for another slot: (its pixels, a function fitting them with uniform bars on two
    opposite sides, method, severity). Defects before ``letterboxed`` in ORDER act on the content alone."""
    bars = rng.uniform(0.18, 0.36)  # DESIGN: >= 12 % of the width or height
    colour = [(0, 0, 0), (16, 16, 16), (34, 34, 38), (128, 128, 128)][int(rng.choice(4, p=[0.55, 0.2, 0.15, 0.1]))]
    vertical = (w / h < 1) or (w / h == 1 and rng.random() < 0.5)  # bars top and bottom
    kind = rng.choice(["cv2.copyMakeBorder", "PIL paste", "numpy pad"])
    for _ in range(2):
        cw, ch = (w, round(h * (1 - bars))) if vertical else (round(w * (1 - bars)), h)
        try:
            content, _ = render(spec, cw, ch, photos, fonts)
            break
        except Infeasible:
            vertical = not vertical
    else:
        raise Infeasible("no letterboxed rendering fits")
    a = (h - ch) // 2 if vertical else (w - cw) // 2
    b = (h - ch - a) if vertical else (w - cw - a)
    share = (h - ch) / h if vertical else (w - cw) / w
    if (1 - share) * _luma(content).mean() + share * colour[0] < 70:  # black bars would make it read as dark
        colour = (128, 128, 128)

    def pad(x: np.ndarray) -> np.ndarray:
        if kind == "cv2.copyMakeBorder":
            t, bt, lf, rt = (a, b, 0, 0) if vertical else (0, 0, a, b)
            return cv2.copyMakeBorder(x, t, bt, lf, rt, cv2.BORDER_CONSTANT, value=colour)
        if kind == "PIL paste":
            im = Image.new("RGB", (w, h), colour)
            im.paste(Image.fromarray(x), (0, a) if vertical else (a, 0))
            return np.asarray(im)
        widths = ((a, b), (0, 0)) if vertical else ((0, 0), (a, b))
        return np.stack([np.pad(x[..., c], widths, constant_values=colour[c]) for c in range(3)], -1)

    method = f"letterbox {kind} bars={share:.2f} {'top/bottom' if vertical else 'left/right'}"
    return content, pad, method, (share - 0.18) / 0.18


def _consistent(orig: np.ndarray, out: np.ndarray, defects: tuple[str, ...], toned: np.ndarray) -> bool:
    """Measured on the pixels, every exposure/contrast label is clearly on its side of the threshold (the
    spread on ``toned``, the copy before noise was added)."""
    y = _luma(out)
    mean, clipped = float(y.mean()), float(np.mean(np.all(out >= 250, axis=-1)))
    ratio = float(_luma(toned).std()) / max(float(_luma(orig).std()), 1e-6)
    checks = [
        (mean <= 45) if "underexposed" in defects else (mean >= 62),
        (clipped >= 0.35) if "overexposed" in defects else (clipped <= 0.10),
    ]
    # NOTE: a gain cut lowers the spread with the mean, and clipping flattens the highlights; like the synthetic
    # generator, those are under/overexposed, not low_contrast (a spread cut at a kept or raised brightness).
    # Letterbox bars change the spread on their own.
    if "low_contrast" in defects:
        checks.append(ratio <= 0.3)
    elif not {"letterboxed", "underexposed", "overexposed"} & set(defects):
        checks.append(ratio >= 0.45)
    return all(checks)


def _encode_clean(x: np.ndarray, rng: np.random.Generator) -> bytes:
    """A high-quality JPEG (>= 88): a clean creative's usual file, not jpeg_artifacts."""
    q = int(rng.integers(88, 97))
    if rng.random() < 0.5:
        return cv2.imencode(".jpg", x[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()
    b = io.BytesIO()
    Image.fromarray(x).save(b, format="JPEG", quality=q)
    return b.getvalue()


def _png(x: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(x).save(b, format="PNG", compress_level=3)
    return b.getvalue()


def _quality(defects, severities, heavy: bool) -> float:
    q = 1.0 - (PENALTY["text_heavy"] if heavy else 0.0)
    for d, sev in zip(defects, severities, strict=True):
        q *= 1 - PENALTY[d] * (0.6 + 0.4 * float(np.clip(sev, 0, 1)))
    return round(q, 4)


def _degrade(orig, spec, w, h, defects, rng, photos, fonts):
    """(pixels, file bytes, extension, methods, severities) for one degraded copy."""
    s = min(w, h)
    for _ in range(6):
        x, methods, sev, data = orig, [], [], None
        toned = None
        try:
            if "letterboxed" in defects:
                x, pad, m_lb, v_lb = letterbox(spec, w, h, rng, photos, fonts)
            for d in sorted(defects, key=ORDER.index):
                if d == "letterboxed":
                    x, m, v = pad(x), m_lb, v_lb
                elif d == "jpeg_artifacts":
                    x, m, v, data = jpeg(x, rng, s)
                elif d == "watermark":
                    x, m, v = watermark(x, rng, s, fonts)
                else:
                    if d == "noisy":
                        toned = x
                    x, m, v = OPS[d](x, rng, s)
                methods.append(m)
                sev.append(v)
        except Infeasible:
            continue
        if data is None and "noisy" not in defects and rng.random() < 0.15:  # JPEG would smooth the noise away
            data = _encode_clean(x, rng)
            x = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        if _consistent(orig, x, defects, x if toned is None else toned):
            return x, data or _png(x), ".jpg" if data else ".png", methods, sev
    raise Infeasible(f"{'+'.join(defects)}: no parameters gave unambiguous labels")


# ---------------------------------------------------------------------------------------------------- build
def _key(n: int, seed: int, photos: list[Photo], fonts) -> dict:
    ids = sorted(p.source.key for p in photos) + sorted(f[0] for f in fonts)
    return {
        "builder_version": BUILDER_VERSION,
        "n": n,
        "seed": seed,
        "assets": hashlib.sha1("|".join(ids).encode()).hexdigest()[:12],
    }


def build(
    out_dir: str | Path,
    n: int = 1000,
    seed: int = 0,
    allow_fallback: bool = False,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Build (once) ``n`` creatives under ``out_dir``; returns the manifest's path.

    Args:
        out_dir: where ``images/``, ``manifest.csv`` and the cache marker go.
        n: creatives in all, clean originals and their degraded copies together.
        seed: the draw of photos, layouts, defects and parameters.
        allow_fallback: use whatever photos and fonts are installed (at least the wheels' photos) instead of
            failing when the Debian packages are missing; for unit tests.
        force: rebuild even when the marker matches.
    """
    _require_libs()
    out = Path(out_dir)
    photos, fonts = find_photos(allow_fallback), find_fonts(allow_fallback)
    key = _key(n, seed, photos, fonts)
    manifest, marker = out / MANIFEST, out / MARKER
    if not force and manifest.is_file() and marker.is_file() and json.loads(marker.read_text()) == key:
        log.info("%s is up to date (%s)", manifest, key)
        return manifest
    tags = load_taxonomy().tag_names
    (out / "images").mkdir(parents=True, exist_ok=True)
    for old in (out / "images").glob("*"):
        old.unlink()
    rng = np.random.default_rng(seed)
    cycle: list[str] = []
    rows: list[dict] = []
    t0 = time.time()
    gi = 0
    bar = _progress(n, progress)
    while len(rows) < n:
        g_rng = np.random.default_rng([seed, gi])
        spec, w, h, orig, frac = _sample_spec(g_rng, photos, fonts)
        group = f"g{gi:05d}"
        src = photos[spec.photo].source
        base = {t: 0 for t in tags}
        has_text = int(bool(spec.headline or spec.body))
        base |= {"has_text": has_text, "has_logo": int(spec.logo is not None), "has_cta": int(spec.cta is not None)}
        base["text_heavy"] = int(spec.heavy)
        common = {"pair": group, "source_photo": f"{src.package}:{src.key}", "licence": src.licence,
                  "aspect": spec.aspect, "width": w, "height": h, "layout": spec.layout}  # fmt: skip
        data = _encode_clean(orig, g_rng) if g_rng.random() < 0.25 else _png(orig)
        ext = ".jpg" if data[:2] == b"\xff\xd8" else ".png"
        rel = f"images/{group}_0{ext}"
        (out / rel).write_bytes(data)
        rows.append({"path": rel, **base, "quality": _quality([], [], spec.heavy), **common, "role": "original",
                     "defects": "", "methods": "", "text_fraction": round(frac, 4)})  # fmt: skip
        bar.update(1)
        k = min(n - len(rows), int(g_rng.choice([1, 2, 3], p=[0.25, 0.5, 0.25])))
        for ci in range(1, k + 1):
            if not cycle:  # a shuffled round of every defect, so each gets the same share
                cycle = list(rng.permutation(DEFECTS))
            first = cycle.pop()
            if spec.heavy and first == "letterboxed":  # bars would shrink the text under the threshold
                first = "blurry"
            pairs = [p for p in PAIRS if first in p and not (spec.heavy and "letterboxed" in p)]
            defects = tuple(sorted(pairs[int(g_rng.integers(len(pairs)))])) if pairs and g_rng.random() < 0.2 else (
                first,)  # fmt: skip
            try:
                x, data, ext, methods, sev = _degrade(orig, spec, w, h, defects, g_rng, photos, fonts)
            except Infeasible as e:
                log.warning("%s copy %d: %s; skipped", group, ci, e)
                continue
            rel = f"images/{group}_{ci}{ext}"
            (out / rel).write_bytes(data)
            labels = dict(base) | {d: 1 for d in defects}
            rows.append({"path": rel, **labels, "quality": _quality(defects, sev, spec.heavy), **common,
                         "role": "degraded", "defects": "+".join(defects), "methods": "; ".join(methods),
                         "text_fraction": round(frac, 4)})  # fmt: skip
            bar.update(1)
        gi += 1
    bar.close()
    df = pd.DataFrame(rows)
    df.to_csv(manifest, index=False)
    marker.write_text(json.dumps(key))
    log.info("built %d creatives from %d photos in %.0f s: %s", len(df), len(photos), time.time() - t0, manifest)
    return manifest


def _progress(n: int, enabled: bool):
    return tqdm(total=n, desc="realphoto", disable=not enabled, unit="creative")


# ----------------------------------------------------------------------------------------------- reporting
def contact_sheet(manifest: str | Path, out: str | Path, groups: int = 8, seed: int = 0, tile: int = 300) -> Path:
    """A grid of clean originals beside their degraded copies, each captioned with its positive tags."""
    man = Path(manifest)
    df = pd.read_csv(man)
    tags = load_taxonomy().tag_names
    rng = np.random.default_rng(seed)
    multi = df.groupby("pair").size()
    picked = list(rng.choice(multi[multi >= 3].index.to_numpy(), size=min(groups, int((multi >= 3).sum())),
                             replace=False))  # fmt: skip
    rows = [df[df["pair"] == g] for g in picked]
    cols = max(len(r) for r in rows)
    cap = 58
    sheet = Image.new("RGB", (cols * (tile + 8), len(rows) * (tile + cap + 8)), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.truetype(_font_file("liberation2/LiberationSans-Regular.ttf") or find_fonts(True)[0][2], 13)
    for r, grp in enumerate(rows):
        for c, (_, row) in enumerate(grp.iterrows()):
            im = Image.open(man.parent / row["path"]).convert("RGB")
            im.thumbnail((tile, tile))
            x, y = c * (tile + 8) + 4, r * (tile + cap + 8) + 4
            sheet.paste(im, (x + (tile - im.width) // 2, y + (tile - im.height) // 2))
            pos = [t for t in tags if row[t] == 1]
            detail = row["methods"] if isinstance(row["methods"], str) and row["methods"] else row["source_photo"]
            lines = [f"{row['role']} {row['width']}x{row['height']} q={row['quality']:.2f}",
                     ", ".join(pos) or "(no tags)", str(detail)]  # fmt: skip
            for i, line in enumerate(lines):
                draw.text((x, y + tile + 2 + i * 17), line[:52], fill=(20, 20, 20), font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def sources_table(photos: tuple[PhotoSource, ...] = PHOTOS + BUNDLED) -> str:
    head = "| photo | package | file | licence | author |\n| --- | --- | --- | --- | --- |\n"
    return head + "\n".join(f"| {p.key} | {p.package} | `{p.where}` | {p.licence} | {p.author} |" for p in photos)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="output folder (images/, manifest.csv, realphoto.json)")
    ap.add_argument("--n", type=int, default=1000, help="creatives in all (originals and degraded copies)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--allow-fallback", action="store_true", help="use whatever photos/fonts are installed")
    ap.add_argument("--force", action="store_true", help="rebuild even if the cached set matches")
    ap.add_argument("--contact-sheet", type=Path, help="also write a PNG grid of clean/degraded groups here")
    ap.add_argument("--sources-table", action="store_true", help="print the photo sources as a Markdown table")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.sources_table:
        print(sources_table())
        return 0
    if a.out is None:
        ap.error("--out is required")
    try:
        t = time.time()
        manifest = build(a.out, n=a.n, seed=a.seed, allow_fallback=a.allow_fallback, force=a.force)
        log.info("manifest: %s (%.0f s)", manifest, time.time() - t)
    except MissingAssets as e:
        log.error("realphoto: %s", e)
        return 2
    if a.contact_sheet:
        log.info("contact sheet: %s", contact_sheet(manifest, a.contact_sheet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
