"""Synthetic creative data sets: files plus the manifests training and evaluation read.

``generate_dataset`` writes, under one folder:

* ``train_labeled.csv``: labels with simulated annotator noise (missed positives,
  false positives, blanks; each rate a parameter), and ``train_labeled_clean.csv``,
  its clean twin for evaluation;
* ``unlabeled.csv`` (``path`` only) and ``unlabeled_clean.csv`` (its hidden truth,
  for oracle baselines);
* ``test.csv``: clean labels; some designs appear twice, clean and degraded, sharing
  a ``pair`` id, so a quality ordering can be checked.

Every creative is seeded from (seed, split, index): the output is the same for a
given seed whatever the number of worker processes.

Labels are written for the tags of the taxonomy given (v1 by default). The generator
knows, from what it rendered, the tags of every built-in taxonomy version (``LABELERS``:
v1's, and v2's split blur kinds, merged exposure, renamed compression tag and
background tags); a tag it does not know is left blank, never 0.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from creative_qa.machine import cpu_count
from creative_qa.synth.defects import BLUR_KERNELS, DEFECTS, ORDER, to_pil
from creative_qa.synth.render import BACKGROUNDS, render_design
from creative_qa.taxonomy import Taxonomy, load_taxonomy

log = logging.getLogger(__name__)

# How much each defect can cost the quality score at full severity.
QUALITY_WEIGHTS = {name: 0.6 for name in DEFECTS} | {"watermark": 0.5, "text_heavy": 0.35, "letterboxed": 0.4}
SPLITS = {"train": 0, "unlabeled": 1, "test": 2, "heldout": 3}


@dataclass
class SynthConfig:
    size: int = 256  # short side of every creative, pixels
    # > size: each still's short side is drawn uniformly from size..size_max (its own seeded draw,
    # so the designs and defects are the same as at a fixed size); videos stay at ``size``.
    size_max: int = 0
    p_clean: float = 0.25  # share of creatives with no defect at all
    p_defect: float = 0.11  # per defect: chance of a positive (over-threshold) severity
    p_mild: float = 0.08  # per defect: chance of a mild, under-threshold severity (a negative)
    p_text_heavy: float = 0.12
    video_frac: float = 0.03  # share of creatives that are short mp4 videos
    video_seconds: float = 2.0
    video_fps: int = 6
    # Generalisation: restrict what a split may use (None = everything).
    fonts: tuple[str, ...] | None = None
    blur_kernels: tuple[str, ...] | None = None
    noise_kinds: tuple[str, ...] | None = None
    backgrounds: tuple[str, ...] = BACKGROUNDS
    options: dict = field(default_factory=dict)

    def defect_opts(self) -> dict:
        opts = dict(self.options)
        if self.fonts:
            opts["fonts"] = self.fonts
        if self.blur_kernels:
            opts["blur_kernels"] = self.blur_kernels
        if self.noise_kinds:
            opts["noise_kinds"] = self.noise_kinds
        return opts


@dataclass
class Creative:
    image: np.ndarray  # (H, W, 3) float32
    labels: dict[str, int]  # every tag the generator knows (see LABELERS)
    quality: float
    measured: dict[str, float]


# Tags the generator can label from what it rendered, by name, across taxonomy versions. Each
# takes the v1 labels and the render facts (blur kernel, background kind). A tag not listed is
# one the generator cannot judge: its cells are blank.
Labeler = Callable[[dict[str, int], dict[str, str]], int]
LABELERS: dict[str, Labeler] = {
    "motion_blur": lambda v1, facts: int(v1["blurry"] == 1 and facts.get("blur_kernel") == "motion"),
    "defocus_blur": lambda v1, facts: int(v1["blurry"] == 1 and facts.get("blur_kernel") in ("gaussian", "box")),
    "compression_artifacts": lambda v1, facts: v1["jpeg_artifacts"],
    "bad_exposure": lambda v1, facts: int(v1["overexposed"] == 1 or v1["underexposed"] == 1),
    "photo_background": lambda v1, facts: int(facts.get("background") == "photo"),
    "striped_background": lambda v1, facts: int(facts.get("background") == "stripes"),
}


def label_creative(design_labels: dict[str, int], measured: dict[str, float], facts: dict[str, str]) -> dict[str, int]:
    """Every tag the generator knows: v1's by DESIGN.md's rules, then the ``LABELERS`` built on them."""
    v1 = {name: 0 for name in DEFECTS} | design_labels
    for name, value in measured.items():
        v1[name] = DEFECTS[name].label(value)
    return v1 | {tag: fn(v1, facts) for tag, fn in LABELERS.items()}


def unknown_tags(tags: list[str]) -> list[str]:
    """Tags of a taxonomy the generator cannot label (left blank in what it writes)."""
    known = set(DEFECTS) | {"text_heavy", "has_text", "has_logo", "has_cta"} | set(LABELERS)
    return [t for t in tags if t not in known]


def quality_from(measured: dict[str, float], text_coverage: float) -> float:
    q = 1.0
    for name, value in measured.items():
        q *= 1.0 - QUALITY_WEIGHTS[name] * DEFECTS[name].badness(value)
    q *= 1.0 - QUALITY_WEIGHTS["text_heavy"] * float(np.clip((text_coverage - 0.1) / 0.3, 0.0, 1.0))
    return float(np.clip(q, 0.0, 1.0))


def choose_defects(rng: np.random.Generator, cfg: SynthConfig) -> dict[str, float]:
    """Pick which defects to apply and their control values (positives and mild negatives)."""
    if rng.random() < cfg.p_clean:
        return {}
    chosen: dict[str, float] = {}
    for name in ORDER:
        d = DEFECTS[name]
        u = rng.random()
        if u < cfg.p_defect:
            chosen[name] = float(rng.uniform(*d.positive))
        elif u < cfg.p_defect + cfg.p_mild:
            chosen[name] = float(rng.uniform(*d.mild))
    if "overexposed" in chosen and "underexposed" in chosen:  # contradictory: keep one
        del chosen["underexposed" if rng.random() < 0.5 else "overexposed"]
    return chosen


def apply_defects(
    image: np.ndarray,
    chosen: dict[str, float],
    rng: np.random.Generator,
    cfg: SynthConfig,
    facts: dict[str, str] | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Apply the chosen defects in ``ORDER``; ``facts`` (if given) receives the blur kernel used."""
    measured: dict[str, float] = {}
    opts = cfg.defect_opts()
    for name in ORDER:
        if name in chosen:
            o = opts
            if name == "blurry" and not opts.get("blur_kernel"):
                # NOTE: the same draw blur() would make itself, made here so the kernel is known.
                o = opts | {"blur_kernel": str(rng.choice(opts.get("blur_kernels", BLUR_KERNELS)))}
            if name == "blurry" and facts is not None:
                facts["blur_kernel"] = o["blur_kernel"]
            image, measured[name] = DEFECTS[name].apply(image, chosen[name], rng, o)
    return image, measured


def make_creative(rng: np.random.Generator, cfg: SynthConfig, chosen: dict[str, float] | None = None) -> Creative:
    text_heavy = rng.random() < cfg.p_text_heavy
    # NOTE: the design and the defects draw from their own streams: how many draws a design takes
    # depends on its size (text fitting), and must not change which defects the same seed gives.
    r_design, r_defects = rng.spawn(2)
    design = render_design(r_design, cfg.size, text_heavy=text_heavy, fonts=cfg.fonts, backgrounds=cfg.backgrounds)
    chosen = choose_defects(r_defects, cfg) if chosen is None else chosen
    facts = {"background": design.info.get("background", "")}
    image, measured = apply_defects(design.image, chosen, r_defects, cfg, facts)
    labels = label_creative(design.labels, measured, facts)
    return Creative(image, labels, quality_from(measured, design.text_coverage), measured)


def _save_image(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image).save(path, format="PNG", compress_level=1)


def _save_video(frames: list[np.ndarray], path: Path, fps: int) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "14", "preset": "veryfast"}
        for f in frames:
            # NOTE: converted on this thread (threads=1): swscale's slice-thread pool can deadlock at its join
            # (creative_qa.media._frame_rgb), and generator workers are pool processes too.
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(
                format=stream.pix_fmt, threads=1
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    path.write_bytes(buf.getvalue())


def make_video(rng: np.random.Generator, cfg: SynthConfig) -> tuple[list[np.ndarray], Creative]:
    """A short video: a slow zoom over one design; some defects cover only the second half.

    A video's label for a tag is positive when any part of it shows the defect.
    """
    r_design, rng = rng.spawn(2)  # as make_creative: the defects' draws do not depend on the design's
    design = render_design(r_design, cfg.size, fonts=cfg.fonts, backgrounds=cfg.backgrounds)
    chosen = choose_defects(rng, cfg)
    partial = {n for n in chosen if rng.random() < 0.5}
    n = max(4, int(cfg.video_seconds * cfg.video_fps))
    h, w = design.image.shape[:2]
    base = to_pil(design.image)
    frames, measured_all = [], {}
    facts = {"background": design.info.get("background", "")}
    opts_rng_seed = int(rng.integers(2**31))
    for i in range(n):
        z = 1.0 + 0.08 * i / n
        cw, ch = int(w / z), int(h / z)
        frame = (
            np.asarray(
                base.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)).resize((w, h)),
                dtype=np.float32,
            )
            / 255.0
        )
        active = {k: v for k, v in chosen.items() if k not in partial or i >= n // 2}
        # Same defect parameters on every frame (same rng seed), so it does not flicker.
        frame, measured = apply_defects(frame, active, np.random.default_rng(opts_rng_seed), cfg, facts)
        measured_all.update(measured)
        frames.append(np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8))
    labels = label_creative(design.labels, measured_all, facts)
    return frames, Creative(design.image, labels, quality_from(measured_all, design.text_coverage), measured_all)


def _row(rel: str, c: Creative, tags: list[str], **extra) -> dict:
    # A tag the generator does not know is blank (NaN), never 0.
    row = {"path": rel, **{t: c.labels.get(t, np.nan) for t in tags}, "quality": round(c.quality, 4)}
    row["defects"] = json.dumps({k: round(v, 5) for k, v in c.measured.items()})
    return row | extra


def still_size(cfg: SynthConfig, seed: int, split: str, i: int) -> int:
    """The short side of still ``i`` of a split: ``cfg.size``, or its own draw up to ``cfg.size_max``."""
    if cfg.size_max <= cfg.size:
        return cfg.size
    # NOTE: a separate stream, so every other draw (design, defects, noise) is what a fixed size gives.
    return int(np.random.default_rng([seed, SPLITS[split], i, 1]).integers(cfg.size, cfg.size_max + 1))


def _make_one(args: tuple) -> list[dict]:
    seed, split, i, cfg, out_dir, tags, pair_frac = args
    rng = np.random.default_rng([seed, SPLITS[split], i])
    if rng.random() < cfg.video_frac:
        frames, c = make_video(rng, cfg)
        rel = f"{split}/{i:06d}.mp4"
        _save_video(frames, out_dir / rel, cfg.video_fps)
        return [_row(rel, c, tags, media="video")]
    still = replace(cfg, size=still_size(cfg, seed, split, i), size_max=0)
    if split == "test" and rng.random() < pair_frac:
        # A clean design and a degraded copy of it, for the quality-ordering check.
        r_design, rng = rng.spawn(2)  # as make_creative: the defects' draws do not depend on the design's
        design = render_design(r_design, still.size, fonts=cfg.fonts, backgrounds=cfg.backgrounds)
        chosen = {}
        while not chosen:
            chosen = choose_defects(rng, cfg)
        facts = {"background": design.info.get("background", "")}
        image, measured = apply_defects(design.image, chosen, rng, cfg, facts)
        rows = []
        for suffix, img, meas in (("a", design.image, {}), ("b", image, measured)):
            labels = label_creative(design.labels, meas, facts)
            c = Creative(img, labels, quality_from(meas, design.text_coverage), meas)
            rel = f"{split}/{i:06d}{suffix}.png"
            _save_image(img, out_dir / rel)
            rows.append(_row(rel, c, tags, media="image", pair=i))
        return rows
    c = make_creative(rng, still)
    rel = f"{split}/{i:06d}.png"
    _save_image(c.image, out_dir / rel)
    return [_row(rel, c, tags, media="image")]


def add_annotator_noise(
    clean: pd.DataFrame,
    tags: list[str],
    rng: np.random.Generator,
    miss_rate: float,
    fp_rate: float,
    blank_rate: float,
    quality_noise: float,
) -> pd.DataFrame:
    """Simulate annotators: miss positives, add false positives, leave values blank."""
    noisy = clean.copy()
    for t in tags:
        y = clean[t].to_numpy().astype(float)
        u = rng.random(len(y))
        flipped = np.where((y == 1) & (u < miss_rate), 0.0, y)
        flipped = np.where((y == 0) & (u < fp_rate), 1.0, flipped)
        flipped[rng.random(len(y)) < blank_rate] = np.nan
        noisy[t] = flipped
    if "quality" in noisy:
        q = clean["quality"].to_numpy() + rng.normal(0, quality_noise, len(clean))
        q = np.clip(q, 0, 1).round(4)
        q[rng.random(len(q)) < blank_rate] = np.nan
        noisy["quality"] = q
    return noisy


def _write_csv(df: pd.DataFrame, path: Path, tags: list[str]) -> None:
    out = df.copy()
    for t in tags:
        if t in out:
            # 1 / 0 / empty: blanks stay blank, never 0.
            out[t] = out[t].map(lambda v: "" if pd.isna(v) else str(int(v)))
    out.to_csv(path, index=False)


def _generate_split(
    split: str,
    n: int,
    seed: int,
    cfg: SynthConfig,
    out: Path,
    tags: list[str],
    workers: int,
    pair_frac: float,
    progress: bool,
) -> pd.DataFrame:
    jobs = [(seed, split, i, cfg, out, tags, pair_frac) for i in range(n)]
    rows: list[dict] = []
    it: Iterator[list[dict]]
    if workers > 1 and n > 32:
        pool = ProcessPoolExecutor(max_workers=workers)
        it = pool.map(_make_one, jobs, chunksize=16)
    else:
        pool, it = None, map(_make_one, jobs)
    try:
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=n, desc=f"synth {split}", unit="creative", leave=False)
        for r in it:
            rows.extend(r)
    finally:
        if pool:
            pool.shutdown()
    return pd.DataFrame(rows)


# What the generator draws for a given seed; bumped whenever that changes, so a data set cached
# by an older generator (a benchmark's, the demo's) is made again instead of silently reused.
# 2: photo backgrounds are never enlarged past render.PHOTO_MAX_UPSCALE (mirror-tiled instead).
# 3: the design's parts and the defects draw from separate streams (the same seed, the same creative
#    at every size); an overexposure washes its highlights to white, so it reaches the clipped share
#    it aims at (on a saturated design gain alone clipped next to nothing).
SYNTH_VERSION = 4

# Annotator noise as the learning benchmark and the demo simulate it: 30 % of positives missed, 5 % false
# positives per tag, 20 % of values left blank (the rates real annotators show; generate_dataset's own
# defaults are lighter).
ANNOTATOR_NOISE = {"miss_rate": 0.3, "fp_rate": 0.05, "blank_rate": 0.2}


def generate_dataset(
    out_dir: str | Path,
    n_labeled: int = 1000,
    n_unlabeled: int = 1000,
    n_test: int = 300,
    seed: int = 0,
    cfg: SynthConfig | None = None,
    miss_rate: float = 0.1,
    fp_rate: float = 0.02,
    blank_rate: float = 0.1,
    quality_noise: float = 0.05,
    pair_frac: float = 0.3,
    workers: int | None = None,
    taxonomy: Taxonomy | None = None,
    progress: bool = True,
    heldout_cfg: SynthConfig | None = None,
    n_heldout: int = 0,
) -> dict[str, Path]:
    """Write a synthetic data set and its manifests; returns the manifest paths."""
    cfg = cfg or SynthConfig()
    tags = (taxonomy or load_taxonomy()).tag_names
    if unknown_tags(tags):
        log.warning("the generator cannot label %s: those columns stay blank", ", ".join(unknown_tags(tags)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(cpu_count(), 8)
    paths: dict[str, Path] = {}

    train = _generate_split("train", n_labeled, seed, cfg, out, tags, workers, 0.0, progress)
    noisy = add_annotator_noise(
        train, tags, np.random.default_rng([seed, 99]), miss_rate, fp_rate, blank_rate, quality_noise
    )
    for name, df in (("train_labeled", noisy), ("train_labeled_clean", train)):
        paths[name] = out / f"{name}.csv"
        _write_csv(df, paths[name], tags)
    if n_unlabeled:
        unl = _generate_split("unlabeled", n_unlabeled, seed, cfg, out, tags, workers, 0.0, progress)
        paths["unlabeled"] = out / "unlabeled.csv"
        unl[["path"]].to_csv(paths["unlabeled"], index=False)
        paths["unlabeled_clean"] = out / "unlabeled_clean.csv"
        _write_csv(unl, paths["unlabeled_clean"], tags)
    if n_test:
        test = _generate_split("test", n_test, seed, cfg, out, tags, workers, pair_frac, progress)
        paths["test"] = out / "test.csv"
        _write_csv(test, paths["test"], tags)
    if n_heldout and heldout_cfg is not None:
        held = _generate_split("heldout", n_heldout, seed, heldout_cfg, out, tags, workers, 0.0, progress)
        paths["heldout"] = out / "heldout.csv"
        _write_csv(held, paths["heldout"], tags)
    (out / "synth.json").write_text(
        json.dumps(
            {
                "synth_version": SYNTH_VERSION,
                "seed": seed,
                "n_labeled": n_labeled,
                "n_unlabeled": n_unlabeled,
                "n_test": n_test,
                "miss_rate": miss_rate,
                "fp_rate": fp_rate,
                "blank_rate": blank_rate,
                "quality_noise": quality_noise,
                "config": {k: v for k, v in asdict(cfg).items() if k != "options"},
            },
            indent=2,
            default=str,
        )
    )
    return paths


__all__ = [
    "LABELERS",
    "Creative",
    "SynthConfig",
    "add_annotator_noise",
    "apply_defects",
    "choose_defects",
    "generate_dataset",
    "label_creative",
    "make_creative",
    "make_video",
    "quality_from",
    "unknown_tags",
]
