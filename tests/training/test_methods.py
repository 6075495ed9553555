"""Every method: a step on a tiny batch gives a finite loss, gradients on every head, and respects masks."""

import pytest
import torch

from creative_qa.taxonomy import load_taxonomy
from tests.conftest import TINY_OVERRIDES
from training.config import load_config
from training.methods import METHODS, get_method
from training.model import build_model

NAN = float("nan")
VIEWS = load_config("default", TINY_OVERRIDES).model.views
TAGS = len(load_taxonomy())  # the taxonomy's tag count, read from it


def _batch(n: int = 4, t: int = TAGS, v: int = VIEWS, s: int = 64, pool: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (n, t), generator=g).float()
    labels[0, :5] = NAN
    return {
        "images": torch.randint(0, 256, (n, v, s, s, 3), dtype=torch.uint8, generator=g),
        "crop_pool": torch.randint(0, 256, (n, pool, s, s, 3), dtype=torch.uint8, generator=g),
        "labels": labels,
        "quality": torch.rand(n, generator=g),
        "index": torch.arange(n),
    }


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return build_model(load_config("default", TINY_OVERRIDES).model, TAGS)


LABEL_METHODS = sorted(n for n, cls in METHODS.items() if not cls.label_free)


@pytest.mark.parametrize("name", LABEL_METHODS)
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


@pytest.mark.parametrize(
    "loss", [{}, {"loss": "forward", "loss_params": {"miss_rate": 0.3, "fp_rate": 0.05}}], ids=["bce", "forward"]
)
def test_supervised_blank_tags_get_no_gradient(model, loss):
    """The tag loss pushes on every known label and on no blank one: d loss / d logit is 0 exactly where blank."""
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["logits"] = output

    model.tag_head.register_forward_hook(keep)
    method = get_method("supervised")(model, quality_weight=0.0, **loss)
    b = _batch()
    loss, _ = method.train_step(b, None, 0)
    loss.backward()
    grad = captured["logits"].grad
    blank = torch.isnan(b["labels"])
    assert blank.sum() == 5 and torch.isfinite(grad).all()
    assert (grad[blank] == 0).all()
    assert (grad[~blank] != 0).all()


def test_unknown_method_and_unknown_parameter_are_errors(model):
    with pytest.raises(ValueError, match="supervised"):
        get_method("no-such-method")
    with pytest.raises(TypeError, match="bogus"):
        get_method("supervised")(model, bogus=1)


@pytest.mark.parametrize("name", LABEL_METHODS)
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


def test_the_loop_names_no_method():
    """Methods are found, not listed: the loop's source mentions none of them by name."""
    import inspect

    import training.loop

    source = inspect.getsource(training.loop)
    assert len(METHODS) >= 5
    for name in METHODS:
        assert f'"{name}"' not in source and f"'{name}'" not in source and f"methods.{name}" not in source, name


def test_every_shipped_recipe_builds_its_method_and_steps():
    """Each one-stage recipe in training/configs names a method and parameters that build and train a step
    (multi-stage methods, which take stage parameters in ``run``, have tests of their own)."""
    from training.config import recipe_path
    from training.methods.base import Method

    names = sorted(p.stem for p in recipe_path("default").parent.glob("*.yaml"))
    assert {"default", "synthesis", "synthesis_forward"} <= set(names)
    stepped = []
    for name in names:
        cfg = load_config(name, TINY_OVERRIDES)
        cls = get_method(cfg.method.name)
        if cls.label_free or cls.staged.__func__ is not Method.staged.__func__:
            continue
        torch.manual_seed(0)
        method = cls(build_model(cfg.model, TAGS), **cfg.method.params)
        loss, _ = method.train_step(_batch(), _batch() if method.uses_unlabeled else None, step=0)
        assert torch.isfinite(loss), name
        stepped.append(name)
    assert {"default", "synthesis", "synthesis_forward"} <= set(stepped) and len(stepped) >= 10
