"""The classic semi-supervised family in multi-label form: each method's own rule, by hand on small tensors."""

import math

import pytest
import torch

from training.losses import bernoulli_kl, masked_bce, sharpen
from training.methods.comatch import graph_contrastive_loss, label_graph, smooth_pseudo_labels
from training.methods.ema import sigmoid_rampup
from training.methods.meta_pseudo_labels import mpl_teacher_loss
from training.methods.mixmatch import mix_lambda, mixup
from training.methods.temporal_ensembling import Ensemble
from training.methods.uda import tsa_mask, tsa_threshold
from training.methods.vat import vat_direction

NAN = float("nan")


def test_sharpen_by_hand():
    p = torch.tensor([0.8, 0.5, 0.1])
    out = sharpen(p, 0.5)  # p^2 / (p^2 + (1 - p)^2)
    assert out.tolist() == pytest.approx([0.64 / 0.68, 0.5, 0.01 / 0.82], rel=1e-5)
    assert sharpen(p, 1.0).tolist() == pytest.approx(p.tolist(), rel=1e-5)


def test_consistency_ramp_is_exp_minus_5_one_minus_t_squared():
    assert sigmoid_rampup(0, 200) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(100, 200) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(200, 200) == 1.0 and sigmoid_rampup(999, 200) == 1.0


def test_temporal_ensemble_target_is_bias_corrected():
    ens = Ensemble(3, 2, alpha=0.6)
    idx = torch.tensor([0, 2])
    _, seen = ens.target(idx)
    assert seen.flatten().tolist() == [0.0, 0.0]  # nothing to agree with yet
    p1, p2 = torch.tensor([[0.2, 0.9], [0.5, 0.5]]), torch.tensor([[0.4, 0.7], [0.1, 0.3]])
    ens.update(idx, p1)
    ens.update(idx, p2)
    target, seen = ens.target(idx)
    expected = (0.6 * 0.4 * p1 + 0.4 * p2) / (1 - 0.6**2)
    assert torch.allclose(target, expected) and seen.flatten().tolist() == [1.0, 1.0]
    assert ens.target(torch.tensor([1]))[1].item() == 0.0  # creative 1 was never seen


def test_uda_training_signal_annealing():
    assert tsa_threshold(0, 100) == pytest.approx(0.5)
    assert tsa_threshold(50, 100) == pytest.approx(0.75)
    assert tsa_threshold(100, 100, "exp") == pytest.approx(1.0)
    assert tsa_threshold(10, 100, "log") > tsa_threshold(10, 100, "linear") > tsa_threshold(10, 100, "exp")
    logits = torch.logit(torch.tensor([[0.9, 0.9, 0.3, 0.6]]))
    labels = torch.tensor([[1.0, 0.0, 0.0, NAN]])
    # P(given value): 0.9 (too sure, dropped at eta 0.75), 0.1 (kept), 0.7 (kept), blank (never)
    assert tsa_mask(logits, labels, 0.75).tolist() == [[0.0, 1.0, 1.0, 0.0]]


def test_vat_direction_has_norm_eps_times_the_features_and_raises_the_kl():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 3)
    f = torch.randn(5, 8)
    r = vat_direction(head, f, xi=1e-3, eps=0.2)
    assert torch.allclose(r.norm(dim=1), 0.2 * f.norm(dim=1), rtol=1e-5)
    rand = torch.randn(5, 8)
    rand = rand / rand.norm(dim=1, keepdim=True) * 0.2 * f.norm(dim=1, keepdim=True)
    with torch.no_grad():
        assert bernoulli_kl(head(f), head(f + r)) > bernoulli_kl(head(f), head(f + rand))


def test_mixmatch_lambda_and_mixup_keep_blanks_blank():
    torch.manual_seed(0)
    lams = [mix_lambda(0.75) for _ in range(200)]
    assert min(lams) >= 0.5 and max(lams) <= 1.0 and len(set(lams)) > 100
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, NAN], [0.0, 1.0]])
    mf, my = mixup(f, y, 0.7, torch.tensor([1, 0]))
    assert torch.allclose(mf, torch.tensor([[0.7, 0.3], [0.3, 0.7]]))
    assert my[0, 0].item() == pytest.approx(0.7) and my[1, 0].item() == pytest.approx(0.3)
    assert torch.isnan(my[:, 1]).all()  # a blank mixed with a label is still unknown


@pytest.mark.parametrize("improvement", [0.5, -0.5])
def test_mpl_teacher_update_follows_the_students_improvement(improvement):
    """A gradient step on the teacher loss raises the pseudo-labels' likelihood iff the student improved."""
    logits = torch.tensor([[0.3, -0.2, 0.1]], requires_grad=True)
    pseudo = torch.tensor([[1.0, 0.0, 1.0]])
    mpl_teacher_loss(improvement, logits, pseudo).backward()
    with torch.no_grad():
        stepped = logits - 0.1 * logits.grad
        before, after = masked_bce(logits, pseudo), masked_bce(stepped, pseudo)
    assert (after < before) == (improvement > 0)


def test_comatch_smoothing_and_multilabel_graph():
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mem_e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mem_p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = smooth_pseudo_labels(p, emb, mem_e, mem_p, alpha=0.5, tau=1.0)
    w = torch.softmax(emb @ mem_e.T, dim=1)
    assert torch.allclose(q, 0.5 * p + 0.5 * w @ mem_p)
    assert torch.equal(smooth_pseudo_labels(p, emb, mem_e[:0], mem_p[:0], 0.5, 1.0), p)
    # creatives 0 and 1 share their tags (cosine 1), creative 2 has others: related by tags, not by a class
    probs = torch.tensor([[0.9, 0.9, 0.0], [0.8, 0.8, 0.0], [0.0, 0.1, 0.9]])
    g = label_graph(probs, threshold=0.8)
    assert g[0, 1] > 0 and g[1, 0] > 0 and g[0, 2] == 0 and g[2, 2] == 1.0
    assert torch.allclose(g.sum(1), torch.ones(3))
    e = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.0]]), dim=1)
    aligned = graph_contrastive_loss(e, e, g, 0.2)
    shuffled = graph_contrastive_loss(e, e[[2, 1, 0]], g, 0.2)
    assert aligned < shuffled
