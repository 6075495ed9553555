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


def flag_f1(probs: np.ndarray, labels: np.ndarray, tags: list[str], thresholds: dict[str, float]) -> dict[str, float]:
    """F1 of the flags (probability >= the tag's threshold) per tag over known labels, and their macro mean."""
    out: dict[str, float] = {}
    for j, t in enumerate(tags):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j].astype(bool)
        if not y.any():
            continue
        flag = probs[known, j] >= thresholds.get(t, 0.5)
        tp = float((flag & y).sum())
        out[t] = 2 * tp / max(float(flag.sum() + y.sum()), 1.0)
    return {"flag_F1": float(np.mean(list(out.values()))) if out else float("nan")} | {
        f"flag_F1_{t}": v for t, v in out.items()
    }


def noise_corrected_prior(observed: float, miss_rate: float, fp_rate: float) -> float:
    """The true positive rate behind an observed one, when annotators miss ``miss_rate`` of positives
    and mark ``fp_rate`` of negatives: observed = prior (1 - miss) + (1 - prior) fp."""
    denom = 1.0 - miss_rate - fp_rate
    if denom <= 0:
        raise ValueError(f"miss_rate + fp_rate must be < 1, got {miss_rate} + {fp_rate}")
    return float(np.clip((observed - fp_rate) / denom, 1e-3, 1 - 1e-3))


def prior_matched_thresholds(
    pool_probs: np.ndarray, labels: np.ndarray, tags: list[str], miss_rate: float = 0.0, fp_rate: float = 0.0
) -> dict[str, float]:
    """Per-tag thresholds that flag the tag's estimated true share of the pool.

    The share is the tag's positive rate among known labels, corrected for the annotators'
    known miss and false-positive rates; the threshold is the pool's probability quantile
    at one minus that share. It needs no labeled validation split, so no label is spent on it.
    """
    out: dict[str, float] = {}
    for j, t in enumerate(tags):
        known = ~np.isnan(labels[:, j])
        if not known.any() or len(pool_probs) == 0:
            out[t] = 0.5
            continue
        prior = noise_corrected_prior(float(labels[known, j].mean()), miss_rate, fp_rate)
        out[t] = float(np.quantile(pool_probs[:, j], 1.0 - prior))
    return out


def label_quality(given: np.ndarray, truth: np.ndarray, tags: list[str]) -> dict[str, dict[str, float]]:
    """Per tag, how good a label set is against the truth, over the labels it gives (blanks left out):
    precision of its 1s, recall of the true 1s, and how many 0s are really 1s."""
    out: dict[str, dict[str, float]] = {}
    for j, t in enumerate(tags):
        known = ~np.isnan(given[:, j]) & ~np.isnan(truth[:, j])
        g, y = given[known, j] == 1, truth[known, j] == 1
        out[t] = {
            "given_pos": int(g.sum()),
            "precision": float((g & y).sum() / g.sum()) if g.any() else float("nan"),
            "recall": float((g & y).sum() / y.sum()) if y.any() else float("nan"),
            "wrong_zeros": float((~g & y).sum() / (~g).sum()) if (~g).any() else float("nan"),
        }
    return out
