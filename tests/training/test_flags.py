"""Flag calibration: annotator rates from validation, reliable tags, thresholds for a target precision."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta

from creative_qa.flags import FlagPolicy, TagFlag
from training.flags import calibrate_flags, estimate_annotator_rates, precision_threshold


def _annotate(truth: np.ndarray, miss: float, fp: float, rng: np.random.Generator) -> np.ndarray:
    r = rng.random(truth.shape)
    return np.where(truth == 1, r >= miss, r < fp).astype(float)


def _validation(n: int, tags: int, miss: float, fp: float, seed: int = 0, skill: float = 3.0):
    """True labels at 10-30 % prevalence, a model that ranks them (logit = skill x truth + noise), noisy labels."""
    rng = np.random.default_rng(seed)
    prevalence = rng.uniform(0.1, 0.3, tags)
    truth = (rng.random((n, tags)) < prevalence).astype(float)
    probs = 1 / (1 + np.exp(-(skill * (truth - 0.5) + rng.normal(0, 1, truth.shape))))
    return probs, truth, _annotate(truth, miss, fp, rng)


@pytest.mark.parametrize("miss,fp", [(0.3, 0.05), (0.1, 0.02)])
def test_rates_estimated_from_validation_track_the_annotators(miss, fp):
    probs, _, noisy = _validation(600, 10, miss, fp)
    m, f, pos, neg = estimate_annotator_rates(probs, noisy)
    assert abs(m - miss) < 0.06 and abs(f - fp) < 0.03, (m, f)
    assert pos > 100 and neg > 3000


def test_heavier_annotator_noise_gives_higher_estimates():
    light = estimate_annotator_rates(*_validation(400, 8, 0.1, 0.02, seed=1)[::2])
    heavy = estimate_annotator_rates(*_validation(400, 8, 0.3, 0.05, seed=1)[::2])
    assert heavy[0] > light[0] + 0.1 and heavy[1] > light[1]


def test_precision_threshold_is_the_lowest_cut_whose_lower_bound_reaches_the_target():
    p = np.linspace(0.99, 0.01, 40)
    y = np.array([1.0] * 20 + [0.0] * 20)
    # the precision's 90 % lower bound over the top k = 20 + j (20 hits): Beta(21, j + 1)'s 10 % quantile,
    # 0.896, 0.834, 0.785, 0.742, 0.705 for j = 0..4: the 21st creative is the last whose cut reaches 0.8
    assert beta.ppf(0.1, 21, 2) >= 0.8 > beta.ppf(0.1, 21, 3)
    thr, bound = precision_threshold(p, y, target=0.8, miss=0.0, fp=0.0, min_flagged=5)
    assert thr == p[20] and bound == pytest.approx(beta.ppf(0.1, 21, 2))
    # corrected for 30 % of positives missed (a bound b is b / 0.7 true), the cut goes deeper: at 0.705 observed
    # (j = 4) the corrected bound is still 1.007
    thr, bound = precision_threshold(p, y, target=0.8, miss=0.3, fp=0.0, min_flagged=5)
    assert thr < p[23] and bound >= 0.8
    # five of five flagged is a lower bound of 0.68, not certainty: no cut reaches 0.8 on 5 creatives
    assert precision_threshold(p[:5], y[:5], 0.8, 0.0, 0.0, min_flagged=5) == (None, pytest.approx(0.1 ** (1 / 6)))
    # fewer flags than min_flagged cannot carry a precision
    assert precision_threshold(p[:4], y[:4], 0.5, 0.0, 0.0, min_flagged=5)[0] is None


def test_precision_threshold_never_cuts_between_ties():
    p = np.array([0.9, 0.8, 0.7, 0.5, 0.5, 0.5, 0.1])
    y = np.array([1, 1, 1, 1, 0, 0, 0], float)
    # the top 4 would bound at Beta(5, 1)'s 10 % quantile = 0.63, but a threshold of 0.5 flags all three ties
    # (4 of 6: 0.41); the top 3 bound at 0.56
    thr, _ = precision_threshold(p, y, target=0.55, miss=0.0, fp=0.0, min_flagged=1)
    assert thr == 0.7


def test_calibrate_flags_marks_what_validation_cannot_back():
    rng = np.random.default_rng(0)
    n = 500
    probs, truth, noisy = _validation(n, 6, 0.3, 0.05, seed=2)  # a, b, c and three more that rank
    probs[:, 1] = rng.random(n)  # tag b: a model that cannot rank it
    noisy[:, 2] = np.nan
    noisy[:2, 2] = 1  # tag c: two labelled positives
    noisy[2:20, 2] = 0
    tags = ["a", "b", "c", "d", "e", "f"]
    policy = calibrate_flags(probs, noisy, tags, {"a": 0.5, "b": 0.5, "c": 0.4}, target_precision=0.8)
    a, b, c = (policy.tags[t] for t in "abc")
    assert a.reliable and not b.reliable and not c.reliable
    assert "does not rank above its prior" in b.reason and "too few" in c.reason
    assert c.threshold == 0.4  # an unreliable tag keeps the taxonomy's threshold
    # tag a's flags are precise against the truth (the noisy labels alone would say far less)
    flagged = probs[:, 0] >= a.threshold
    assert truth[flagged, 0].mean() >= 0.75 and flagged.sum() >= 10
    assert policy.rates_source == "estimated" and 0.15 < policy.miss_rate < 0.45
    assert abs(a.est_share - truth[:, 0].mean()) < 0.08
    assert {"b", "c"} <= set(policy.unreliable) and "a" not in policy.unreliable


def test_given_rates_are_used_as_given():
    probs, _, noisy = _validation(200, 2, 0.3, 0.05)
    policy = calibrate_flags(probs, noisy, ["a", "b"], {}, rates=(0.2, 0.01))
    assert (policy.miss_rate, policy.fp_rate, policy.rates_source) == (0.2, 0.01, "given")


def test_unreachable_target_makes_a_ranked_tag_unreliable():
    probs, _, noisy = _validation(300, 1, 0.1, 0.02, skill=1.5)
    policy = calibrate_flags(probs, noisy, ["a"], {}, target_precision=0.99, rates=(0.1, 0.02))
    assert not policy.tags["a"].reliable and "no threshold reaches precision 0.99" in policy.tags["a"].reason


def test_policy_flags_only_reliable_tags_and_round_trips():
    policy = FlagPolicy(
        0.8, 0.3, 0.05, "estimated",
        {"a": TagFlag(0.5, True, "ok"), "b": TagFlag(0.2, False, "cannot rank")},
    )  # fmt: skip
    assert policy.flags({"a": 0.6, "b": 0.9}) == ["a"]
    assert policy.flags({"a": 0.4, "b": 0.9}) == []
    back = FlagPolicy.from_json(policy.to_json())
    assert back == policy and back.unreliable == {"b": "cannot rank"}


def test_tags_with_impure_anchors_do_not_inflate_the_miss_rate():
    """Two tags whose surest creatives are half true negatives (a model that ranks them badly at the top) and
    many positives: pooling the anchors would say far more than 30 % missed; the lower quartile does not."""
    probs, truth, noisy = _validation(600, 8, 0.3, 0.05, seed=4, skill=4.0)
    rng = np.random.default_rng(0)
    for j in (0, 1):  # the top of these tags' ranking: negatives and positives mixed
        neg = np.flatnonzero(truth[:, j] == 0)
        probs[rng.choice(neg, 60, replace=False), j] = 0.999
        truth[:, j] = (rng.random(600) < 0.6).astype(float)  # and many positives, to dominate a pooled estimate
        u = rng.random(600)
        noisy[:, j] = np.where(truth[:, j] == 1, u >= 0.3, u < 0.05)
    miss, _, _, _ = estimate_annotator_rates(probs, noisy)
    assert 0.2 < miss < 0.36, miss
