"""Every method: a step on a tiny batch gives a finite loss, gradients on every head, and respects masks."""

import pytest
import torch

from tests.conftest import TINY_OVERRIDES
from training.config import load_config
from training.methods import METHODS, get_method
from training.model import build_model

NAN = float("nan")


def _batch(n: int = 4, t: int = 14, v: int = 3, s: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (n, t), generator=g).float()
    labels[0, :5] = NAN
    return {
        "images": torch.randint(0, 256, (n, v, s, s, 3), dtype=torch.uint8, generator=g),
        "labels": labels,
        "quality": torch.rand(n, generator=g),
        "index": torch.arange(n),
    }


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return build_model(load_config("default", TINY_OVERRIDES).model, 14)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_step_gives_finite_loss_and_grads_on_every_head(name, model):
    method = get_method(name)(model)
    unl = _batch() if method.uses_unlabeled else None
    loss, logs = method.train_step(_batch(), unl, step=0)
    assert torch.isfinite(loss)
    loss.backward()
    for head in (model.tag_head, model.quality_head):
        assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
        assert head.weight.grad.abs().sum() > 0
    assert all(isinstance(v, float) for v in logs.values())


def test_supervised_blank_tags_contribute_no_loss(model):
    method = get_method("supervised")(model, quality_weight=0.0)
    model.eval()  # no dropout, so two forwards agree
    torch.manual_seed(1)
    b = _batch()
    b["images"] = b["images"][:, :, :, :, :]
    torch.manual_seed(2)
    loss_a, _ = method.train_step(b, None, 0)
    flipped = dict(b)
    flipped["labels"] = b["labels"].clone()
    # changing what a blank could have been changes nothing: it is still blank
    flipped["labels"][0, :5] = NAN
    torch.manual_seed(2)
    loss_b, _ = method.train_step(flipped, None, 0)
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-6)
    # but filling a blank in does change the loss
    filled = dict(b)
    filled["labels"] = b["labels"].clone()
    filled["labels"][0, :5] = 1.0
    torch.manual_seed(2)
    loss_c, _ = method.train_step(filled, None, 0)
    assert loss_c.item() != pytest.approx(loss_a.item(), rel=1e-6)


def test_unknown_method_and_unknown_parameter_are_errors(model):
    with pytest.raises(ValueError, match="supervised"):
        get_method("no-such-method")
    with pytest.raises(TypeError, match="bogus"):
        get_method("supervised")(model, bogus=1)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_blank_is_never_treated_as_negative(name, model):
    """Filling the blanks with 0 must change the supervised loss: blanks are not negatives."""
    b = _batch()
    zeros = dict(b)
    zeros["labels"] = torch.nan_to_num(b["labels"], nan=0.0)
    unl = _batch() if get_method(name).uses_unlabeled else None
    key = "loss_tags" if name == "supervised" else "loss_sup"
    torch.manual_seed(3)
    _, logs_blank = get_method(name)(model, quality_weight=0.0).train_step(b, unl, 0)
    torch.manual_seed(3)
    _, logs_zero = get_method(name)(model, quality_weight=0.0).train_step(zeros, unl, 0)
    assert logs_blank[key] != pytest.approx(logs_zero[key], rel=1e-4)
