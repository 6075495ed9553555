"""Render a clean, ad-like design: background, product, headline, logo, call to action."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from creative_qa.synth.defects import TEXT_HEAVY_THRESHOLD, from_pil
from creative_qa.synth.fonts import font

ASPECTS = {"1:1": (1, 1), "1.91:1": (1.91, 1), "4:5": (4, 5), "9:16": (9, 16)}
HEADLINES = (
    "Summer Sale",
    "New Arrivals",
    "Fresh Deals",
    "Limited Offer",
    "Feel Good",
    "Go Further",
    "Made For You",
    "Big Savings",
    "Try It Free",
    "Bold Flavour",
    "Upgrade Today",
    "Save 30%",
    "Weekend Only",
    "Better Mornings",
)
BODY = (
    "Free shipping on all orders over $50",
    "Terms and conditions apply",
    "Available in stores and online now",
    "Offer valid while stocks last",
    "Join millions of happy customers",
    "Download the app and save more",
    "Exclusive prices for members only",
    "Order before midnight for delivery",
)
CTAS = ("Shop now", "Learn more", "Buy", "Sign up", "Get offer", "Install")
BACKGROUNDS = ("gradient", "radial", "flat", "stripes", "photo")
PHOTO_MAX_UPSCALE = 1.25  # a photo background is never enlarged more (low_resolution starts at 3x)


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The two real photos scikit-learn ships (china.jpg, flower.jpg), if installed."""
    spec = importlib.util.find_spec("sklearn")
    out = []
    for loc in (spec.submodule_search_locations or []) if spec else []:
        for name in ("china.jpg", "flower.jpg"):
            p = Path(loc) / "datasets" / "images" / name
            if p.is_file():
                out.append(np.asarray(Image.open(p).convert("RGB")))
    return tuple(out)


def _mirror_tile(img: Image.Image, w: int, h: int) -> Image.Image:
    """``img`` repeated to ``w`` x ``h``, every other copy mirrored so the seams continue the picture."""
    a = np.asarray(img)
    reps = (-(-h // a.shape[0]), -(-w // a.shape[1]))
    row = np.concatenate([a if j % 2 == 0 else a[:, ::-1] for j in range(reps[1])], axis=1)
    tiled = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(reps[0])], axis=0)
    return Image.fromarray(np.ascontiguousarray(tiled[:h, :w]))


def _light_colour(rng: np.random.Generator) -> np.ndarray:
    # Backgrounds stay mid-to-light so exposure defects have room to act both ways.
    c = rng.uniform(0.35, 0.95, 3)
    return (c * 255).astype(int)


def _background(rng: np.random.Generator, w: int, h: int, kinds: tuple[str, ...]) -> tuple[Image.Image, str]:
    """A background and the kind actually drawn (``photo`` falls back to a gradient without photos)."""
    kind = str(rng.choice(kinds))
    if kind == "photo" and _photos():
        photo = _photos()[int(rng.integers(len(_photos())))]
        ph, pw = photo.shape[:2]
        scale = max(w / pw, h / ph) * rng.uniform(1.0, 1.4)
        # NOTE: the photos are 427 x 640 px: covering a large creative by scaling alone would upscale
        # them 2.5-3.5x, which is what `low_resolution` means (content upscaled >= 3x), on a creative
        # labelled clean. Past PHOTO_MAX_UPSCALE the photo is mirror-tiled at that scale instead.
        cover = min(scale, PHOTO_MAX_UPSCALE)
        img = Image.fromarray(photo).resize((int(pw * cover) + 1, int(ph * cover) + 1), Image.Resampling.LANCZOS)
        if cover < scale:
            img = _mirror_tile(img, int(pw * scale) + 1, int(ph * scale) + 1)
        x0 = int(rng.integers(0, img.width - w + 1))
        y0 = int(rng.integers(0, img.height - h + 1))
        return img.crop((x0, y0, x0 + w, y0 + h)), "photo"
    c1, c2 = _light_colour(rng), _light_colour(rng)
    if kind in ("gradient", "photo"):
        t = np.linspace(0, 1, h if rng.random() < 0.5 else w, dtype=np.float32)
        row = c1[None] * (1 - t[:, None]) + c2[None] * t[:, None]
        arr = np.broadcast_to(row[:, None] if len(t) == h else row[None], (h, w, 3))
        return Image.fromarray(arr.astype(np.uint8)), "gradient"
    if kind == "radial":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r = np.sqrt((xx / w - rng.uniform(0.2, 0.8)) ** 2 + (yy / h - rng.uniform(0.2, 0.8)) ** 2)
        t = np.clip(r / 0.9, 0, 1)[..., None]
        return Image.fromarray((c1 * (1 - t) + c2 * t).astype(np.uint8)), "radial"
    img = Image.new("RGB", (w, h), tuple(int(v) for v in c1))
    d = ImageDraw.Draw(img)
    if kind == "stripes":
        step = int(min(w, h) * rng.uniform(0.08, 0.2))
        for k in range(-h, w + h, step * 2):
            d.polygon([(k, 0), (k + step, 0), (k + step - h, h), (k - h, h)], fill=tuple(int(v) for v in c2))
    else:  # flat design: a few soft shapes
        for _ in range(int(rng.integers(2, 5))):
            cx, cy, rr = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.1, 0.4) * min(w, h)
            d.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), fill=tuple(int(v) for v in _light_colour(rng)))
    return img, kind


def _contrasting(rng: np.random.Generator, bg: Image.Image, box: tuple[int, int, int, int]) -> tuple[int, int, int]:
    region = np.asarray(bg.crop(box).resize((4, 4)), dtype=np.float32)
    lum = float(region.mean())
    return (20, 20, 30) if lum > 128 else (250, 250, 250)


@dataclass
class Design:
    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    labels: dict[str, int]  # content tags and text_heavy
    text_coverage: float
    info: dict = field(default_factory=dict)


def render_design(
    rng: np.random.Generator,
    short_side: int,
    aspect: str | None = None,
    text_heavy: bool = False,
    fonts: tuple[str, ...] | None = None,
    backgrounds: tuple[str, ...] = BACKGROUNDS,
    p_text: float = 0.8,
    p_logo: float = 0.6,
    p_cta: float = 0.6,
) -> Design:
    """Render one clean creative. ``text_heavy`` adds text boxes until they cover >= 20 % of it."""
    aspect = aspect or str(rng.choice(list(ASPECTS)))
    # NOTE: each part of the design draws from its own stream. Whether a line of text fits depends on
    # the font's pixel metrics, which are not exactly proportional to the size; a retry must not shift
    # every later part's draws, so the same seed renders the same design at every size.
    r_bg, r_product, r_text, r_logo, r_cta = rng.spawn(5)
    aw, ah = ASPECTS[aspect]
    if aw >= ah:
        h, w = short_side, int(round(short_side * aw / ah))
    else:
        w, h = short_side, int(round(short_side * ah / aw))
    w, h = w + w % 2, h + h % 2  # even sizes, so videos encode in yuv420p
    s = min(w, h)
    img, background = _background(r_bg, w, h, backgrounds)
    d = ImageDraw.Draw(img)
    text_mask = np.zeros((h, w), dtype=bool)

    # Product: a rounded box, a disc or a bottle-like shape with a shadow.
    pw, ph = s * r_product.uniform(0.25, 0.4), s * r_product.uniform(0.3, 0.5)
    px, py = r_product.uniform(0.2, 0.8) * w, r_product.uniform(0.35, 0.7) * h
    colour = tuple(int(v) for v in r_product.integers(20, 230, 3))
    box = (px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2)
    d.rounded_rectangle(tuple(v + s * 0.02 for v in box), radius=int(s * 0.04), fill=(60, 60, 60))
    shape = r_product.integers(3)
    if shape == 0:
        d.rounded_rectangle(box, radius=int(s * 0.04), fill=colour)
    elif shape == 1:
        d.ellipse(box, fill=colour)
    else:
        d.rounded_rectangle((box[0], box[1] + ph * 0.25, box[2], box[3]), radius=int(s * 0.05), fill=colour)
        d.rectangle((px - pw * 0.15, box[1], px + pw * 0.15, box[1] + ph * 0.3), fill=colour)

    def put_text(text: str, size: int, xy: tuple[float, float], panel: bool) -> bool:
        f = font(r_text, size, fonts)
        bbox = d.textbbox(xy, text, font=f)
        pad = int(size * 0.25)
        bbox = (int(bbox[0]) - pad, int(bbox[1]) - pad, int(bbox[2]) + pad, int(bbox[3]) + pad)
        if bbox[0] < 0 or bbox[1] < 0 or bbox[2] > w or bbox[3] > h:
            return False
        if panel:
            d.rectangle(bbox, fill=tuple(int(v) for v in r_text.integers(0, 255, 3)))
        fill = _contrasting(r_text, img, bbox)
        d.text(xy, text, font=f, fill=fill)
        text_mask[bbox[1] : bbox[3], bbox[0] : bbox[2]] = True
        return True

    if text_heavy or r_text.random() < p_text:
        size = int(s * r_text.uniform(0.07, 0.11))
        headline = str(r_text.choice(HEADLINES))
        for _ in range(4):
            if put_text(
                headline, size, (r_text.uniform(0.04, 0.3) * w, r_text.uniform(0.04, 0.2) * h), r_text.random() < 0.3
            ):
                break
            size = int(size * 0.8)
    if text_heavy:
        target = r_text.uniform(TEXT_HEAVY_THRESHOLD + 0.03, 0.45)
        for _ in range(40):
            if text_mask.mean() >= target:
                break
            size = int(s * r_text.uniform(0.05, 0.09))
            put_text(
                str(r_text.choice(BODY))[: int(r_text.integers(8, 30))],
                size,
                (r_text.uniform(0.0, 0.5) * w, r_text.uniform(0.0, 0.9) * h),
                r_text.random() < 0.5,
            )
    elif text_mask.any() and r_text.random() < 0.4:  # a short line of body copy, staying light
        put_text(str(r_text.choice(BODY))[:18], int(s * 0.045), (0.05 * w, r_text.uniform(0.75, 0.85) * h), False)
        if text_mask.mean() >= TEXT_HEAVY_THRESHOLD - 0.03:  # NOTE: keep a margin under the rule
            return render_design(rng, short_side, aspect, text_heavy, fonts, backgrounds, p_text, p_logo, p_cta)

    has_text = bool(text_mask.any())
    has_logo = r_logo.random() < p_logo
    if has_logo:
        r = s * r_logo.uniform(0.07, 0.11)
        cx, cy = (w - r * 1.6) if r_logo.random() < 0.5 else r * 1.6, h - r * 1.6 if r_logo.random() < 0.5 else r * 1.6
        lc = tuple(int(v) for v in r_logo.integers(0, 200, 3))
        if r_logo.random() < 0.5:
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=lc)
        else:
            d.regular_polygon((cx, cy, r), n_sides=int(r_logo.integers(3, 7)), fill=lc)
        d.text(
            (cx, cy),
            str(r_logo.choice(list("ABKMQRSZ"))),
            font=font(r_logo, int(r * 1.1), fonts),
            fill=(255, 255, 255),
            anchor="mm",
        )

    has_cta = r_cta.random() < p_cta
    if has_cta:
        label = str(r_cta.choice(CTAS))
        f = font(r_cta, int(s * 0.055), fonts)
        tb = d.textbbox((0, 0), label, font=f)
        bw, bh = tb[2] - tb[0] + s * 0.08, tb[3] - tb[1] + s * 0.05
        bx, by = r_cta.uniform(0.05, 0.95) * (w - bw), h * r_cta.uniform(0.82, 0.9) - bh / 2
        bc = tuple(int(v) for v in r_cta.integers(0, 200, 3))
        d.rounded_rectangle((bx, by, bx + bw, by + bh), radius=int(bh / 2), fill=bc)
        d.text((bx + bw / 2, by + bh / 2), label, font=f, fill=(255, 255, 255), anchor="mm")

    coverage = float(text_mask.mean())
    labels = {
        "has_text": int(has_text),
        "has_logo": int(has_logo),
        "has_cta": int(has_cta),
        "text_heavy": int(coverage >= TEXT_HEAVY_THRESHOLD),
    }
    return Design(from_pil(img), labels, coverage, {"aspect": aspect, "size": (w, h), "background": background})
