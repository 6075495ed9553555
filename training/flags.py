"""Calibrating the flag policy on validation: annotator rates, reliable tags, precision-target thresholds.

Validation labels are the team's: noisy and few. Three steps, all on them:

1. **Annotator rates** (``estimate_annotator_rates``), from the tags the model ranks above their
   prior (anchor points, Patrini et al. 2017, read from labels rather than from the model): among
   each tag's surest positives the labels' positive share is ``1 - miss`` (the lower quartile over
   tags: impure anchors only raise it); among the creatives ranked below twice the tag's observed
   positives, it is ``fp``.
2. **Reliable or not**: a tag is reliable when the bootstrap's lower 5 % bound of its validation
   AP minus its observed positive share is above 0 (it ranks better than its prior).
3. **Threshold for a target precision**: the lowest threshold (most flags) whose flagged
   validation creatives have a noise-corrected precision ``(o - fp) / (1 - miss - fp)`` at or above
   the target, over at least ``min_flagged`` of them; ``o`` is not their labels' positive share but
   its lower confidence bound (Beta posterior quantile at ``1 - confidence``): with a few dozen
   validation labels the best-looking cut is a lucky one (a simulation with 60 validation creatives
   put half of the tags a posterior mean calls reliable below the target on fresh data; the 0.9
   bound, a quarter, rarely far below it). A tag that ranks but never reaches the target is
   unreliable too: validation cannot back it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta
from sklearn.metrics import average_precision_score

from creative_qa.flags import FlagPolicy, TagFlag
from training.metrics import noise_corrected_prior

RATE_CLIP = (0.0, 0.45)  # a rate above this makes the correction meaningless


def _known(probs: np.ndarray, labels: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    known = ~np.isnan(labels[:, j])
    return probs[known, j], labels[known, j]


def ranks_above_prior(p: np.ndarray, y: np.ndarray, n_boot: int = 200, seed: int = 0) -> tuple[bool, float, float]:
    """``(lower 5 % bound of AP - prior > 0, AP, lower bound)`` by bootstrap over creatives."""
    ap = float(average_precision_score(y, p))
    rng = np.random.default_rng(seed)
    lifts = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        yb = y[idx]
        if 0 < yb.sum() < len(yb):
            lifts.append(average_precision_score(yb, p[idx]) - yb.mean())
    lo = float(np.quantile(lifts, 0.05)) if lifts else float("-inf")
    return lo > 0, ap, lo


@dataclass(frozen=True)
class TagAnchors:
    """One tag's anchor counts (``tag_anchors``): its surest ``pos_n`` creatives, ``pos_hits`` of them labelled
    positive; ``neg_n`` ranked below twice its observed positives, ``neg_hits`` of them labelled positive."""

    pos_hits: int
    pos_n: int
    neg_hits: int
    neg_n: int

    @property
    def miss(self) -> float:
        """The tag's miss-rate estimate: ``1 -`` its positive anchors' labelled-positive share (or more)."""
        return 1.0 - self.pos_hits / self.pos_n if self.pos_n else float("nan")

    @property
    def fp(self) -> float:
        """The tag's false-positive-rate estimate: its negative anchors' labelled-positive share (or more)."""
        return self.neg_hits / self.neg_n if self.neg_n else float("nan")


def tag_anchors(probs: np.ndarray, labels: np.ndarray, j: int, anchor_frac: float = 0.3) -> TagAnchors | None:
    """Tag ``j``'s anchors (Patrini et al. 2017, read from the labels): ``None`` when its known labels are all
    one value or it has under 2 positives."""
    p, y = _known(probs, labels, j)
    npos = int(y.sum())
    if npos < 2 or npos == len(y):
        return None
    order = np.argsort(-p, kind="stable")
    k = max(1, round(anchor_frac * npos))
    below = y[order[2 * npos :]]
    return TagAnchors(int(y[order[:k]].sum()), k, int(below.sum()), len(below))


def estimate_annotator_rates(
    probs: np.ndarray,
    labels: np.ndarray,
    use: list[int] | None = None,
    anchor_frac: float = 0.3,
    min_anchors: int = 5,
    quantile: float = 0.25,
) -> tuple[float, float, int, int]:
    """``(miss rate, false-positive rate, positive anchors, negative anchors)`` from tags ``use``.

    Positive anchors: each tag's ``anchor_frac`` x its observed positives, surest first; ``1 -`` their
    labels' positive share is that tag's miss rate, or more: a true negative among them (a tag the model
    ranks less well) only raises it. The annotators' rate is shared by the tags, so the tags with the
    purest anchors bound it best: the lower ``quantile`` of the per-tag estimates (over tags with at least
    ``min_anchors`` anchors; pooled when fewer than 3 have). On the grid's 2,000-label light cell the
    pooled share said 34 % for a true 12 %, led by the content tags' impure tops; a low estimate only
    makes the flags more cautious. Negative anchors: every creative ranked below twice its tag's observed
    positives, pooled (a positive among them raises the estimate, which also makes flags more cautious).
    """
    anchors = [tag_anchors(probs, labels, j, anchor_frac) for j in (use if use is not None else range(labels.shape[1]))]
    anchors = [a for a in anchors if a is not None]
    per_tag = [a.miss for a in anchors if a.pos_n >= min_anchors]
    pos_hits, pos_n = sum(a.pos_hits for a in anchors), sum(a.pos_n for a in anchors)
    neg_hits, neg_n = sum(a.neg_hits for a in anchors), sum(a.neg_n for a in anchors)
    if len(per_tag) >= 3:
        miss = float(np.quantile(per_tag, quantile))
    else:
        miss = 1.0 - pos_hits / pos_n if pos_n else 0.0
    fp = neg_hits / neg_n if neg_n else 0.0
    return float(np.clip(miss, *RATE_CLIP)), float(np.clip(fp, *RATE_CLIP)), pos_n, neg_n


def precision_threshold(
    p: np.ndarray, y: np.ndarray, target: float, miss: float, fp: float, min_flagged: int, confidence: float = 0.9
) -> tuple[float | None, float]:
    """The lowest threshold whose flags reach ``target`` noise-corrected precision at ``confidence``, and that
    precision bound (``(None, best bound)`` when none reaches it)."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    k = np.arange(1, len(ys) + 1)
    hits = np.cumsum(ys)
    observed = beta.ppf(1.0 - confidence, hits + 1.0, k - hits + 1.0)  # Beta(1, 1) prior: a lower bound
    corrected = np.clip((observed - fp) / max(1.0 - miss - fp, 1e-6), 0.0, 1.0)
    # A cut between two equal probabilities is not a threshold: only the last of a run of ties counts.
    valid = (k >= min_flagged) & np.append(ps[1:] < ps[:-1], True)
    if not valid.any():
        return None, float("nan")
    best = float(corrected[valid].max())
    ok = np.flatnonzero(valid & (corrected >= target))
    if not len(ok):
        return None, best
    i = int(ok[-1])
    return float(ps[i]), float(corrected[i])


def calibrate_flags(
    probs: np.ndarray,
    labels: np.ndarray,
    tags: list[str],
    default_thresholds: dict[str, float],
    target_precision: float = 0.8,
    min_flagged: int = 5,
    confidence: float = 0.9,
    rates: tuple[float, float] | None = None,
    n_boot: int = 200,
    seed: int = 0,
) -> FlagPolicy:
    """The flag policy from validation probabilities ``(N, T)`` and noisy labels (NaN = unknown).

    ``rates``: the annotators' ``(miss, false-positive)`` rates if known; estimated otherwise.
    """
    stats: dict[str, tuple] = {}
    ranked: list[int] = []
    for j, t in enumerate(tags):
        p, y = _known(probs, labels, j)
        npos = int(y.sum())
        if npos < 3 or npos == len(y):
            stats[t] = (None, None, f"{npos} labelled positives of {len(y)} in validation: too few to judge")
            continue
        ok, ap, lo = ranks_above_prior(p, y, n_boot, seed + j)
        stats[t] = (ap, float(y.mean()), None if ok else f"does not rank above its prior on validation (AP {ap:.2f}, "
                    f"positive share {y.mean():.2f}, lower bound of the lift {lo:+.2f})")  # fmt: skip
        if ok:
            ranked.append(j)
    if rates is None:
        miss, fp, pos_n, neg_n = estimate_annotator_rates(probs, labels, ranked)
        source = "estimated"
    else:
        miss, fp = (float(r) for r in rates)
        source, pos_n, neg_n = "given", 0, 0
    out: dict[str, TagFlag] = {}
    for j, t in enumerate(tags):
        ap, prior, reason = stats[t]
        default = float(default_thresholds.get(t, 0.5))
        share = noise_corrected_prior(prior, miss, fp) if prior is not None else None
        if reason is not None:
            out[t] = TagFlag(default, False, reason, ap, prior, share)
            continue
        p, y = _known(probs, labels, j)
        thr, precision = precision_threshold(p, y, target_precision, miss, fp, min_flagged, confidence)
        if thr is None:
            best = "no" if np.isnan(precision) else f"best {precision:.2f}"
            why = (
                f"no threshold reaches precision {target_precision:.2f} at {confidence:.0%} confidence on "
                f"validation ({best}, >= {min_flagged} flags)"
            )
            out[t] = TagFlag(default, False, why, ap, prior, share)
        else:
            why = (
                f"precision >= {precision:.2f} (at {confidence:.0%} confidence) >= {target_precision:.2f} "
                f"on validation at {thr:.3f} (AP {ap:.2f})"
            )
            out[t] = TagFlag(thr, True, why, ap, prior, share, precision)
    return FlagPolicy(target_precision, miss, fp, source, out, anchors=(pos_n, neg_n))
