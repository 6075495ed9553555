"""Evaluation metrics. Unknown (NaN) labels are left out of every figure."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import average_precision_score, precision_recall_curve


def per_tag_ap(probs: np.ndarray, labels: np.ndarray, tags: list[str]) -> dict[str, float]:
    """Average precision per tag over known labels; a tag with no known positive is left out."""
    out: dict[str, float] = {}
    for j, t in enumerate(tags):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        if y.sum() < 1 or y.sum() == len(y):
            continue
        out[t] = float(average_precision_score(y, probs[known, j]))
    return out


def macro_map(ap: dict[str, float]) -> float:
    return float(np.mean(list(ap.values()))) if ap else float("nan")


def quality_correlation(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    known = ~np.isnan(target)
    if known.sum() < 3 or np.std(target[known]) == 0 or np.std(pred[known]) == 0:
        return {"quality_spearman": float("nan"), "quality_pearson": float("nan")}
    return {
        "quality_spearman": float(spearmanr(pred[known], target[known]).statistic),
        "quality_pearson": float(pearsonr(pred[known], target[known]).statistic),
    }


def calibrate_thresholds(
    probs: np.ndarray, labels: np.ndarray, tags: list[str], default: dict[str, float]
) -> dict[str, float]:
    """Per-tag threshold that maximises F1 on known labels; the taxonomy default where it cannot."""
    out: dict[str, float] = {}
    for j, t in enumerate(tags):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        if y.sum() < 2 or y.sum() == len(y):
            out[t] = float(default.get(t, 0.5))
            continue
        precision, recall, thr = precision_recall_curve(y, probs[known, j])
        f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
        best = int(np.argmax(f1[:-1])) if len(thr) else 0
        out[t] = float(np.clip(thr[best], 0.01, 0.99)) if len(thr) else float(default.get(t, 0.5))
    return out


def evaluate(
    probs: np.ndarray, quality: np.ndarray, labels: np.ndarray, q_target: np.ndarray, tags: list[str], prefix: str = ""
) -> dict[str, float]:
    """All headline figures: macro mAP, per-tag AP, quality Spearman/Pearson."""
    ap = per_tag_ap(probs, labels, tags)
    out = {f"{prefix}mAP": macro_map(ap)}
    out |= {f"{prefix}AP_{t}": v for t, v in ap.items()}
    out |= {f"{prefix}{k}": v for k, v in quality_correlation(quality, q_target).items()}
    return out
