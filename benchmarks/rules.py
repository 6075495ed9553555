"""A rule-checker arm: the classical per-tag measurements a team would write instead of a model.

``features(image)`` measures an RGB creative with textbook image-quality rules (scikit-image ``blur_effect``
and ``estimate_sigma``, Laplacian variance, high-frequency energy, blockiness on the 8 px JPEG grid, the
clipped share, luma mean and spread, uniform border bars, mosaic blocks, diagonal edges, text-line boxes).
Sharpness and layout are measured at a canonical size (short side 256 px, so a blur is judged relative to
the creative, as DESIGN.md defines it); noise, JPEG blocks and mosaics, which live at the pixel grid, on a
native-resolution centre crop.

``RuleChecker`` turns them into per-tag scores two ways:

- ``direct``: one hand-picked measurement per tag, no training (tags no rule covers score 0);
- fitted: a logistic regression per tag on all measurements, fitted on a manifest's (noisy) labels,
  blank labels ignored.

    python benchmarks/rules.py --train /tmp/rp_synth/train_labeled.csv \\
        --eval /tmp/rp_synth/test.csv --eval /tmp/realphoto/manifest.csv [--model model.onnx]

prints per-tag AP per eval split (tags without positives skipped), beside a model's where ``--model`` is
given, with a line naming the tags where the rules win, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

try:  # NOTE: optional; the CLI names `make bench-data` when they are missing
    import cv2
    import skimage.measure
    import skimage.restoration

    _LIB_ERROR: str | None = None
except ImportError as e:  # pragma: no cover - exercised on a machine without the bench extras
    cv2 = skimage = None
    _LIB_ERROR = str(e)

from creative_qa.manifest import label_matrix, read_manifest
from creative_qa.media import load_frame
from creative_qa.preprocess import text_lines as text_lines_of
from creative_qa.taxonomy import load_taxonomy

log = logging.getLogger("rules")

FEATURES_VERSION = 2
CANON = 256  # short side at which sharpness and layout are measured
CROP = 768  # native-resolution centre crop for pixel-grid measurements
_W = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# The one measurement (and its sign) a rule for each tag would threshold; tags without a rule score 0.
DIRECT = {
    "blurry": ("blur_effect", 1),
    "low_resolution": ("hf_ratio", -1),
    "jpeg_artifacts": ("blockiness", 1),
    "noisy": ("noise_sigma", 1),
    "overexposed": ("clipped_white", 1),
    "underexposed": ("luma_mean", -1),
    "low_contrast": ("luma_spread", -1),
    "letterboxed": ("bar_share", 1),
    "watermark": ("diag_edge_share", 1),
    "text_heavy": ("text_area", 1),
    "pixelated": ("mosaic", 1),
    "has_text": ("text_area", 1),
}


def _require() -> None:
    if _LIB_ERROR is not None:
        raise RuntimeError(f"{_LIB_ERROR}; run `make bench-data` (pip-installs opencv and scikit-image)")


def _bar_share(rgb: np.ndarray) -> float:
    """Share of the height (or width) taken by uniform bars of one colour on two opposite sides."""
    x = rgb.astype(np.float32)
    best = 0.0
    for a in (x, x.transpose(1, 0, 2)):  # rows (top/bottom bars), then columns (left/right)
        n = a.shape[0]
        flat = (a.std(axis=1).max(axis=-1) < 4.0) & (np.abs(a.mean(axis=1) - a[0, 0]).max(axis=-1) < 6.0)
        flat_b = (a.std(axis=1).max(axis=-1) < 4.0) & (np.abs(a.mean(axis=1) - a[-1, -1]).max(axis=-1) < 6.0)
        top = int(np.argmin(flat)) if not flat.all() else n
        bottom = int(np.argmin(flat_b[::-1])) if not flat_b.all() else n
        if min(top, bottom) >= 0.02 * n and top + bottom < n:
            best = max(best, (top + bottom) / n)
    return best


def _mosaic(y: np.ndarray) -> float:
    """In textured places, the share of pixels (nearly) equal to both their right and lower neighbours."""
    yi = y.astype(np.int16)
    eq = (np.abs(yi[:-1, :-1] - yi[:-1, 1:]) <= 2) & (np.abs(yi[:-1, :-1] - yi[1:, :-1]) <= 2)
    blur = cv2.blur(y.astype(np.float32), (15, 15))
    local = np.sqrt(np.maximum(cv2.blur(y.astype(np.float32) ** 2, (15, 15)) - blur**2, 0))[:-1, :-1]
    textured = local > 6
    return float(eq[textured].mean()) if textured.sum() > 100 else float(eq.mean())


def _blockiness(y: np.ndarray) -> float:
    """Log of the mean step across the 8 px grid over the mean step elsewhere (about 0 without JPEG blocks;
    half a grey level added to both, so a flat image is not a huge ratio)."""
    y = y.astype(np.float32)
    out = []
    for d in (np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0)).T):
        cols = d.mean(axis=0)
        idx = np.arange(cols.size)
        grid = cols[idx % 8 == 7].mean()
        rest = cols[idx % 8 != 7].mean()
        out.append(np.log((grid + 0.5) / (rest + 0.5)))
    return float(np.mean(out))


def features(image: np.ndarray) -> dict[str, float]:
    """Classical quality measurements of one RGB uint8 image (H, W, 3)."""
    _require()
    rgb = np.ascontiguousarray(image[..., :3])
    y_full = (rgb.astype(np.float32) @ _W).astype(np.float32)
    # canonical size: relative sharpness, exposure, layout
    s = min(1.0, CANON / min(rgb.shape[:2]))
    small_rgb = rgb
    if s < 1:
        small_rgb = cv2.resize(rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)), interpolation=cv2.INTER_AREA)
    y = (small_rgb.astype(np.float32) @ _W) / 255.0
    lap = cv2.Laplacian(y, cv2.CV_32F)
    var = float(y.var()) + 1e-6
    e1 = float(((y - cv2.GaussianBlur(y, (0, 0), 1.0)) ** 2).mean())
    e4 = float(((y - cv2.GaussianBlur(y, (0, 0), 4.0)) ** 2).mean()) + 1e-9
    gx, gy = cv2.Sobel(y, cv2.CV_32F, 1, 0), cv2.Sobel(y, cv2.CV_32F, 0, 1)
    mag = np.hypot(gx, gy)
    strong = mag > np.quantile(mag, 0.9)
    ang = (np.degrees(np.arctan2(gy, gx)) % 180)[strong]
    diag = np.mean(((ang > 15) & (ang < 75)) | ((ang > 105) & (ang < 165))) if ang.size else 0.0
    y8 = np.clip(y * 255, 0, 255).astype(np.uint8)
    text_area, text_lines = text_lines_of(y8)
    hsv = cv2.cvtColor(small_rgb, cv2.COLOR_RGB2HSV)
    p5, p95 = np.percentile(y * 255, [5, 95])
    # native resolution, centre crop: per-pixel noise, JPEG grid, mosaics
    h, w = y_full.shape
    t, l0 = max(0, (h - CROP) // 2), max(0, (w - CROP) // 2)
    crop = y_full[t : t + CROP, l0 : l0 + CROP]
    c8 = np.clip(crop, 0, 255).astype(np.uint8)
    return {
        "blur_effect": float(skimage.measure.blur_effect(y)),
        "lap_var": float(np.log10(lap.var() + 1e-8)),
        "lap_var_norm": float(np.log10(lap.var() / var + 1e-8)),
        "hf_ratio": e1 / e4,
        "edge_density": float((cv2.Canny(y8, 60, 160) > 0).mean()),
        "noise_sigma": float(skimage.restoration.estimate_sigma(crop / 255.0)) * 255,
        "residual_std": float((crop - cv2.medianBlur(c8, 3).astype(np.float32)).std()),
        "blockiness": _blockiness(crop),
        "mosaic": _mosaic(c8),
        "clipped_white": float(np.mean(np.all(rgb >= 250, axis=-1))),
        "clipped_black": float(np.mean(np.all(rgb <= 5, axis=-1))),
        "luma_mean": float(y.mean() * 255),
        "luma_std": float(y.std() * 255),
        "luma_spread": float(p95 - p5),
        "saturation": float(hsv[..., 1].mean()),
        "bar_share": _bar_share(small_rgb),
        "diag_edge_share": float(diag),
        "text_area": text_area,
        "text_lines": text_lines,
    }


FEATURE_NAMES = (
    "blur_effect",
    "lap_var",
    "lap_var_norm",
    "hf_ratio",
    "edge_density",
    "noise_sigma",
    "residual_std",
    "blockiness",
    "mosaic",
    "clipped_white",
    "clipped_black",
    "luma_mean",
    "luma_std",
    "luma_spread",
    "saturation",
    "bar_share",
    "diag_edge_share",
    "text_area",
    "text_lines",
)


def _one(path: str) -> list[float]:
    f = features(load_frame(path))
    return [f[k] for k in FEATURE_NAMES]


def feature_matrix(paths: Sequence[str | Path], workers: int = 1, progress: bool = True) -> np.ndarray:
    """``(N, F)`` measurements for creatives on disk (a video's middle frame)."""
    paths = [str(p) for p in paths]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        # NOTE: spawn, never fork: a forked copy of a process that has trained (torch's thread pools, MLflow's
        # threads) can wait forever on a lock no thread holds any more; the grid's rules arm hung so.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
            rows = list(tqdm(ex.map(_one, paths, chunksize=8), total=len(paths), disable=not progress))
    else:
        rows = [_one(p) for p in tqdm(paths, desc="features", disable=not progress)]
    return np.asarray(rows, dtype=np.float64).reshape(len(paths), len(FEATURE_NAMES))


def cached_features(manifest: str | Path, workers: int = 1, progress: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """The manifest and its feature matrix, kept beside it (keyed on the paths and FEATURES_VERSION)."""
    df = read_manifest(manifest)
    cache = Path(manifest).with_name(f".{Path(manifest).stem}.rules-v{FEATURES_VERSION}.npz")
    key = np.array(json.dumps([FEATURES_VERSION, list(df["path"])]))
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if str(z["key"]) == str(key) and tuple(z["names"]) == FEATURE_NAMES:
            return df, z["x"]
    x = feature_matrix(df["abspath"], workers=workers, progress=progress)
    try:
        np.savez(cache, x=x, key=key, names=np.array(FEATURE_NAMES))
    except OSError as e:  # a read-only data set still scores; it is measured again next time
        log.warning("could not cache features at %s: %s", cache, e)
    return df, x


class RuleChecker:
    """Per-tag scores from classical measurements: fitted (logistic regression per tag) or ``direct``."""

    def __init__(self, tags: Sequence[str] | None = None, C: float = 0.1):
        self.tags = list(tags or load_taxonomy().tag_names)
        self.C = C
        self.models: dict[str, object] = {}

    def fit(self, manifest_df: pd.DataFrame, images_or_paths: Sequence | np.ndarray) -> RuleChecker:
        """Fit on a manifest's labels (1, 0, blank = ignored). ``images_or_paths``: paths, RGB arrays, or an
        ``(N, F)`` feature matrix already measured."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import QuantileTransformer

        x = self._features(images_or_paths)
        y = label_matrix(manifest_df, self.tags)
        for j, tag in enumerate(self.tags):
            known = ~np.isnan(y[:, j])
            yy = y[known, j]
            if known.sum() < 4 or len(np.unique(yy)) < 2:
                log.warning("%s: too few labels of both kinds to fit; it scores its prior", tag)
                self.models[tag] = float(yy.mean()) if yy.size else 0.0
                continue
            # NOTE: ranks, not raw values: a few measurements have long tails (a flat image's ratios), and
            # a creative outside the fitted range is held at its edge rather than extrapolated. C=0.1: few,
            # noisy labels (C 0.01-1 and class weights moved the synthetic test mAP by under 0.1).
            scale = QuantileTransformer(n_quantiles=min(200, int(known.sum())), output_distribution="normal")
            clf = make_pipeline(scale, LogisticRegression(C=self.C, max_iter=2000))
            self.models[tag] = clf.fit(x[known], yy.astype(int))
        return self

    def score(self, images_or_paths: Sequence | np.ndarray, direct: bool = False) -> np.ndarray:
        """``(N, T)`` scores: probabilities when fitted; when ``direct``, the rule's measurement (signed so that
        higher means the tag), NaN for a tag no rule covers."""
        x = self._features(images_or_paths)
        out = np.zeros((len(x), len(self.tags)), dtype=np.float64)
        for j, tag in enumerate(self.tags):
            if direct:
                name, sign = DIRECT.get(tag, (None, 0))
                out[:, j] = sign * x[:, FEATURE_NAMES.index(name)] if name else np.nan
                continue
            m = self.models.get(tag)
            if m is None:
                raise RuntimeError("fit() the checker first, or score(direct=True)")
            out[:, j] = m if isinstance(m, float) else m.predict_proba(x)[:, 1]
        return out

    @staticmethod
    def _features(items) -> np.ndarray:
        if isinstance(items, np.ndarray) and items.ndim == 2 and items.shape[1] == len(FEATURE_NAMES):
            return items.astype(np.float64)
        rows = []
        for it in items:
            img = it if isinstance(it, np.ndarray) else load_frame(it)
            f = features(img)
            rows.append([f[k] for k in FEATURE_NAMES])
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


def per_tag_ap(y: np.ndarray, scores: np.ndarray, tags: Sequence[str]) -> dict[str, float]:
    """AP per tag over rows with a known label; tags without a positive (or a negative) are left out."""
    from sklearn.metrics import average_precision_score

    out = {}
    for j, t in enumerate(tags):
        known = ~np.isnan(y[:, j])
        yy = y[known, j]
        if yy.sum() == 0 or yy.sum() == yy.size or np.isnan(scores[known, j]).any():
            continue
        out[t] = float(average_precision_score(yy, scores[known, j]))
    return out


def model_scores(model: str, paths: Sequence[str], tags: Sequence[str]) -> np.ndarray:
    """A creative-qa ONNX model's tag probabilities, columns in ``tags`` order (NaN for tags it lacks)."""
    from creative_qa.scorer import Scorer

    scorer = Scorer(model)
    out = np.full((len(paths), len(tags)), np.nan)
    for i, p in enumerate(tqdm(paths, desc="model")):
        res = scorer.score_file(p)["tags"]
        out[i] = [res.get(t, np.nan) for t in tags]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True, help="manifest to fit on (its labels may be noisy or blank)")
    ap.add_argument("--eval", action="append", required=True, help="manifest to evaluate on (repeatable)")
    ap.add_argument("--model", help="an exported creative-qa ONNX model to put beside the rules")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/rules.json"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        _require()
    except RuntimeError as e:
        log.error("rules: %s", e)
        return 2
    tags = load_taxonomy().tag_names
    train_df, x_train = cached_features(a.train, a.workers)
    checker = RuleChecker(tags).fit(train_df, x_train)
    result: dict = {"train": a.train, "features": list(FEATURE_NAMES), "splits": {}}
    for ev in a.eval:
        df, x = cached_features(ev, a.workers)
        y = label_matrix(df, tags)
        split = {
            "n": len(df),
            "rules_fitted": per_tag_ap(y, checker.score(x), tags),
            "rules_direct": per_tag_ap(y, checker.score(x, direct=True), tags),
        }
        if a.model:
            split["model"] = per_tag_ap(y, model_scores(a.model, list(df["abspath"]), tags), tags)
        result["splits"][ev] = split
        _print_split(ev, split)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    log.info("wrote %s", a.out)
    return 0


def _print_split(name: str, split: dict) -> None:
    arms = [k for k in ("rules_fitted", "rules_direct", "model") if k in split]
    tags = list(split["rules_fitted"])
    print(f"\n{name} (n={split['n']})")
    print(f"{'tag':<16}" + "".join(f"{arm:>14}" for arm in arms))
    for t in tags:
        print(f"{t:<16}" + "".join(f"{'-':>14}" if (c := split[arm].get(t)) is None else f"{c:>14.3f}" for arm in arms))
    print(f"{'mAP':<16}" + "".join(f"{np.mean(list(split[arm].values())):>14.3f}" for arm in arms))
    print(
        f"(each arm's mAP is over the tags it scores; no direct rule for {', '.join(sorted(set(tags) - set(DIRECT)))})"
    )
    if "model" in split:
        wins = [
            t for t in tags if max(split["rules_fitted"][t], split["rules_direct"].get(t, 0)) > split["model"].get(t, 1)
        ]
        print(f"rules beat the model on: {', '.join(wins) or 'no tag'}")


if __name__ == "__main__":
    sys.exit(main())
