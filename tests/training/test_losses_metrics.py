import math

import numpy as np
import pytest
import torch

from training.losses import masked_bce
from training.metrics import calibrate_thresholds, evaluate, macro_map, per_tag_ap

NAN = float("nan")


def test_masked_bce_by_hand():
    logits = torch.tensor([[0.0, 2.0], [0.0, -1.0]])
    targets = torch.tensor([[1.0, NAN], [0.0, 1.0]])
    # known: (0,0) y=1 z=0 -> log 2; (1,0) y=0 z=0 -> log 2; (1,1) y=1 z=-1 -> log(1+e)
    expected = (2 * math.log(2) + math.log(1 + math.e)) / 3
    assert masked_bce(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_blank_labels_contribute_nothing():
    logits = torch.randn(4, 3, requires_grad=True)
    targets = torch.tensor([[1, NAN, 0], [NAN, NAN, 1], [0, 0, NAN], [1, 1, 1]], dtype=torch.float32)
    loss = masked_bce(logits, targets)
    loss.backward()
    assert torch.all(logits.grad[torch.isnan(targets)] == 0)
    assert torch.all(logits.grad[~torch.isnan(targets)] != 0)


def test_all_blank_batch_is_zero_not_nan():
    logits = torch.randn(2, 2, requires_grad=True)
    loss = masked_bce(logits, torch.full((2, 2), NAN))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_ap_ignores_unknown_labels_and_tags_without_positives():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.3], [0.2, 0.4]])
    labels = np.array([[1, 0], [NAN, 0], [0, 0], [0, NAN]])
    ap = per_tag_ap(probs, labels, ["a", "b"])
    assert ap == {"a": 1.0}  # b has no positive: left out, not counted as 0
    assert macro_map(ap) == 1.0
    # a wrong ranking scores below 1
    ap2 = per_tag_ap(probs, np.array([[0, 0], [1, 0], [1, 0], [0, 0]]), ["a", "b"])
    assert ap2["a"] < 0.7


def test_calibrated_thresholds_separate_a_separable_tag():
    probs = np.array([[0.2], [0.3], [0.35], [0.6], [0.7]])
    labels = np.array([[0], [0], [0], [1], [1]])
    thr = calibrate_thresholds(probs, labels, ["a"], {"a": 0.5})
    assert 0.35 < thr["a"] <= 0.6
    # no positives: the taxonomy default stays
    assert calibrate_thresholds(probs, np.zeros((5, 1)), ["a"], {"a": 0.42}) == {"a": 0.42}


def test_evaluate_reports_quality_correlation():
    q = np.linspace(0, 1, 10)
    m = evaluate(np.random.rand(10, 1), q, np.zeros((10, 1)), q**2, ["a"])
    assert m["quality_spearman"] == pytest.approx(1.0)
    assert 0.9 < m["quality_pearson"] < 1.0


def test_flag_f1_by_hand():
    from training.metrics import flag_f1

    probs = np.array([[0.9, 0.2], [0.6, 0.7], [0.1, 0.8], [0.4, 0.1]])
    labels = np.array([[1, 0], [0, 1], [1, np.nan], [1, 0]], dtype=float)
    out = flag_f1(probs, labels, ["a", "b"], {"a": 0.5, "b": 0.5})
    # a: flags rows 0,1; truth rows 0,2,3 -> tp 1, F1 = 2/(2+3) = 0.4. b: flags rows 1 (row 2 blank); truth row 1 -> 1.0
    assert out["flag_F1_a"] == pytest.approx(0.4)
    assert out["flag_F1_b"] == pytest.approx(1.0)
    assert out["flag_F1"] == pytest.approx(0.7)


def test_noise_corrected_prior_and_prior_matched_thresholds():
    from training.metrics import noise_corrected_prior, prior_matched_thresholds

    # prior 0.1, 30 % missed, 5 % false positives: observed 0.1 * 0.7 + 0.9 * 0.05 = 0.115
    assert noise_corrected_prior(0.115, 0.3, 0.05) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        noise_corrected_prior(0.2, 0.6, 0.5)
    pool = np.linspace(0, 1, 1001)[:, None]
    labels = np.array([[1.0]] * 115 + [[0.0]] * 885)
    thr = prior_matched_thresholds(pool, labels, ["a"], miss_rate=0.3, fp_rate=0.05)
    assert thr["a"] == pytest.approx(0.9, abs=2e-3)  # flags the top 10 % of the pool, not the observed 11.5 %
    assert prior_matched_thresholds(pool, labels, ["a"])["a"] == pytest.approx(0.885, abs=2e-3)


def test_label_quality_by_hand():
    from training.metrics import label_quality

    given = np.array([[1], [1], [0], [0], [np.nan]], dtype=float)
    truth = np.array([[1], [0], [1], [0], [1]], dtype=float)
    q = label_quality(given, truth, ["a"])["a"]
    assert q == {"given_pos": 2, "precision": 0.5, "recall": 0.5, "wrong_zeros": 0.5}


def test_hill_loss_by_hand():
    from training.losses import hill_loss

    logits = torch.tensor([[0.0, 2.0, -1.0]])
    targets = torch.tensor([[1.0, 0.0, NAN]])
    p0, p1 = 0.5, torch.sigmoid(torch.tensor(2.0)).item()
    pos = (1 - p0) ** 2 * math.log(2)  # focal, gamma 2
    neg = (1.5 - p1) * p1**2
    assert hill_loss(logits, targets).item() == pytest.approx((pos + neg) / 2, rel=1e-5)

    # hill-shaped gradient on a given 0: a confident "1" (likely a missed positive) is pushed less than an
    # unsure one, while BCE pushes it hardest
    def grad(fn, logit: float) -> float:
        x = torch.tensor([[logit]], requires_grad=True)
        fn(x, torch.tensor([[0.0]])).backward()
        return x.grad.item()

    assert grad(hill_loss, 6.0) < 0.1 * grad(hill_loss, 0.0)
    assert grad(masked_bce, 6.0) > grad(masked_bce, 0.0)


def test_large_loss_rejection_and_correction_by_hand():
    from training.losses import large_loss_targets

    logits = torch.tensor([[3.0, -2.0, 1.0], [0.5, 2.5, -1.0]])
    targets = torch.tensor([[0.0, 0.0, 1.0], [0.0, NAN, 0.0]])
    # given 0s: (0,0) logit 3, (0,1) -2, (1,0) 0.5, (1,2) -1 -> the largest losses are (0,0) then (1,0)
    rejected = large_loss_targets(logits, targets, rate=0.5)
    assert torch.isnan(rejected[0, 0]) and torch.isnan(rejected[1, 0])
    assert rejected[0, 1] == 0 and rejected[1, 2] == 0 and rejected[0, 2] == 1 and torch.isnan(rejected[1, 1])
    corrected = large_loss_targets(logits, targets, rate=0.25, correct=True)
    assert corrected[0, 0] == 1 and corrected[1, 0] == 0  # only the top quarter (one label)
    assert torch.equal(torch.nan_to_num(large_loss_targets(logits, targets, 0.0), 9), torch.nan_to_num(targets, 9))


def test_splc_flips_confident_zeros_only():
    from training.losses import splc_targets

    logits = torch.tensor([[2.0, 0.1, 2.0, 2.0]])
    targets = torch.tensor([[0.0, 0.0, 1.0, NAN]])
    out = splc_targets(logits, targets, tau=0.6)
    assert out[0, :3].tolist() == [1.0, 0.0, 1.0] and torch.isnan(out[0, 3])


def test_forward_corrected_bce_by_hand():
    from training.losses import forward_bce, tag_loss

    miss, fp = 0.3, 0.05

    def fwd(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return forward_bce(z, y, miss_rate=miss, fp_rate=fp)

    logits = torch.tensor([[0.0, 2.0, -1.0, 40.0, -40.0]])
    targets = torch.tensor([[1.0, 0.0, NAN, 0.0, 1.0]])
    p = torch.sigmoid(logits)[0].tolist()
    q = [fp + (1 - miss - fp) * x for x in p]  # the chance a noisy annotator gives a 1
    expected = -(math.log(q[0]) + math.log(1 - q[1]) + math.log(1 - q[3]) + math.log(q[4])) / 4
    got = fwd(logits, targets)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert tag_loss("forward", logits, targets, miss_rate=miss, fp_rate=fp).item() == pytest.approx(expected, rel=1e-5)
    # zero rates: plain BCE
    z, y = torch.randn(3, 4), torch.tensor([[1, 0, NAN, 1], [0, 0, 1, NAN], [1, 1, 0, 0]], dtype=torch.float32)
    assert forward_bce(z, y).item() == pytest.approx(masked_bce(z, y).item(), rel=1e-5)
    # a label the model confidently contradicts costs at most -log(rate), where BCE grows without bound
    assert fwd(torch.tensor([[40.0]]), torch.tensor([[0.0]])).item() == pytest.approx(-math.log(miss), rel=1e-4)
    assert fwd(torch.tensor([[-40.0]]), torch.tensor([[1.0]])).item() == pytest.approx(-math.log(fp), rel=1e-4)
    assert masked_bce(torch.tensor([[40.0]]), torch.tensor([[0.0]])).item() > 39
    # finite gradients at any logit; the minimiser over p of the expected loss is the clean probability
    x = torch.tensor([[-80.0, 0.0, 80.0]], requires_grad=True)
    fwd(x, torch.tensor([[1.0, 0.0, 0.0]])).backward()
    assert torch.isfinite(x.grad).all()
    clean = 0.2
    given = fp + (1 - miss - fp) * clean  # the share of 1s among noisy labels of creatives with p = clean

    def risk(z: float) -> float:
        one, zero = (fwd(torch.tensor([[z]]), torch.tensor([[y]])).item() for y in (1.0, 0.0))
        return given * one + (1 - given) * zero

    grid = np.linspace(-5, 5, 1001)
    best = 1 / (1 + math.exp(-grid[np.argmin([risk(z) for z in grid])]))
    assert best == pytest.approx(clean, abs=0.01)
    with pytest.raises(ValueError, match="miss_rate"):
        forward_bce(z, y, miss_rate=0.6, fp_rate=0.5)
