import pytest

from training.config import ConfigError, list_recipes, load_config


def test_default_recipe_and_overrides():
    cfg = load_config("default", ["optim.lr=0.01", "model.backbone=resnet18", "method.params={a: 1}"])
    assert cfg.optim.lr == 0.01 and cfg.model.backbone == "resnet18" and cfg.method.params == {"a": 1}
    assert "default" in list_recipes()
    flat = cfg.flat()
    assert flat["optim.lr"] == 0.01 and flat["method.params"] == {"a": 1}


@pytest.mark.parametrize("override", ["optim.lrr=1", "modell.backbone=x", "nonsense"])
def test_typos_are_errors(override):
    with pytest.raises(ConfigError):
        load_config("default", [override])


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ConfigError, match="default"):
        load_config("no-such-recipe")


def test_switching_the_method_drops_the_recipes_method_parameters():
    from training.config import load_config

    assert load_config("default").method.params  # the default recipe has parameters of its own method
    switched = load_config("default", ["method.name=supervised"])
    assert switched.method.name == "supervised" and switched.method.params == {}
    given = load_config("default", ["method.name=supervised", "method.params={loss: asl}"])
    assert given.method.params == {"loss": "asl"}
    same = load_config("default", ["method.name=defect_synthesis"])
    assert same.method.params == load_config("default").method.params
