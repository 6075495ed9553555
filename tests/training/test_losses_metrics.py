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
