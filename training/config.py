"""Typed training configuration: dataclasses loaded from a YAML recipe, overridable from the CLI.

A recipe (``training/configs/*.yaml``) mirrors ``TrainConfig``::

    model: {backbone: mobilenetv3_small_100, input_size: 128}
    optim: {epochs: 6, lr: 0.003}
    method: {name: supervised}

Overrides use dotted keys: ``optim.lr=0.001 model.backbone=resnet18``. Unknown keys
are errors, so a typo never silently trains the wrong model. The resolved config is
logged to MLflow in full.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from creative_qa.preprocess import GRID_REGION, PreprocessSpec

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    labeled: str | None = None  # label manifest (CSV/Parquet) or None for the demo data
    unlabeled: str | None = None  # manifest with `path` only, or a folder of creatives
    val: str | None = None  # validation manifest; None = hold out `val_frac` of `labeled`
    val_frac: float = 0.15
    test: str | None = None  # clean test manifest, evaluated after training
    taxonomy: str | None = None  # taxonomy YAML; None = the default v1
    max_unlabeled: int | None = None  # cap on the unlabeled pool (None = all)
    mapping: str | None = None  # taxonomy mapping: manifests of its old taxonomy are migrated as they load
    crop_pool: int = 4  # extra detail windows cached per training creative, for strong views
    cache: str = "auto"  # view cache: "auto" = <home>/cache, a folder, or "off" (decode into RAM)
    workers: int = 0  # processes that build the view cache (0 = one per CPU)
    loader_workers: int = 0  # DataLoader workers reading batches (0 = in the training process)
    # Videos in the labeled set: 1 = train on the middle frame; N = on up to N frames sampled as the
    # scorer samples them, the video's tags learned as multiple-instance labels over its frames.
    video_frames: int = 1
    frame_pooling: str = "max"  # how frames' tag logits pool: max (the scorer's) | lse (log-sum-exp)


@dataclass
class ModelConfig:
    # NOTE: the defaults are the CPU-sized model every recipe shares: timm's tiny ResNet (0.4 M
    # parameters) from scratch on the whole creative plus three detail crops at 64 px. For real
    # creatives on a GPU: backbone=convnext_tiny pretrained=true input_size=224.
    backbone: str = "test_resnet"  # any timm model name
    pretrained: bool = False  # timm hub weights (needs network)
    weights: str | None = None  # local weights file for the backbone
    input_size: int = 64  # side of each view
    crops: int = 3  # detail crops next to the whole view (see creative_qa.preprocess)
    detail_side: int = 256  # short side the creative is rescaled to before cropping
    crop_policy: str = "detail"  # "detail": crops where the edges are; "fixed": fixed positions
    native_crops: int = 0  # crops at the creative's own pixels (noise, JPEG, upscaling at any size)
    # 1: a view of the creative's JPEG evidence, three numbers (creative_qa.preprocess.grid_view), and with
    # grid_profile its step-energy profile, three more: without it `jpeg_artifacts` is at chance, and an
    # upscale's ramps are lost on a large creative. It reads the creative's own pixels, so it costs CPU
    # in serving (benchmarks/api_load.py reports CPU per request); 0 turns it off.
    grid_view: int = 1
    grid_region: int = GRID_REGION  # ... read over at most this many pixels square of the creative
    grid_window: str = "edges"  # ... placed where it has the most edge energy ("edges") or at the centre
    grid_profile: int = 1  # ... and its step-energy profile: an upscale's ramps at the creative's own pixels
    reduce: int = 1  # picture views from the creative box-reduced to twice their size (0: from the full size)
    # 1: with grid_profile, the grid view also carries how much of the creative text lines cover, found at 256 px
    # over the whole creative (creative_qa.preprocess.text_lines): `text_heavy` is a whole-creative share that the
    # 64 px whole view and the detail crops lose. 0: off (every model from before the field).
    text_cover: int = 1
    # 1: the model also reads classical measurements of its views, computed in its graph (training.measures):
    # bars on two sides, a mosaic's flat blocks, noise, exposure; what its pooled features place poorly and
    # what carries over to real photographs. 0: off (every model from before the field).
    measures: int = 1
    drop_rate: float = 0.1  # dropout before the heads
    drop_path_rate: float = 0.0  # stochastic depth, where the backbone supports it
    prior_bias: bool = True  # start the tag head's bias at each tag's prior in the labeled set

    @property
    def views(self) -> int:
        """Views per creative: the whole one, the detail crops, the native crops and the grid view."""
        return 1 + self.crops + self.native_crops + self.grid_view


# The model config's fields that are its preprocessing spec's (what the views are): derived, so a new
# spec field in ModelConfig reaches the spec, a checkpoint's config and a warm start without a list to edit.
VIEW_FIELDS = tuple(f for f in PreprocessSpec.__dataclass_fields__ if f in ModelConfig.__dataclass_fields__)


@dataclass
class OptimConfig:
    epochs: int = 22
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.02
    warmup_steps: int = 20
    grad_clip: float = 2.0
    quality_weight: float = 1.0  # weight of the quality loss next to the tag loss
    steps_per_epoch: int | None = None  # None = one pass over the labeled set; N = exactly N steps
    checkpoint_every: int = 500  # steps between step checkpoints (0 = end of each epoch only)


@dataclass
class MethodConfig:
    name: str = "supervised"  # a file in training/methods/
    params: dict[str, Any] = field(default_factory=dict)  # the method's own hyper-parameters


@dataclass
class WarmStartConfig:
    """Start from a previous model (``creative-qa train --from``), see ``training.warmstart``."""

    parent: str | None = None  # models:/name@alias, models:/name/N, runs:/<run id> or a checkpoint path
    pseudo_labels: bool = True  # fill migration blanks from the parent where it is confident
    confident_low: float = 0.1  # parent probability at or below this is a confident 0
    confident_high: float = 0.9  # ... at or above this a confident 1
    # Peak learning rate of a warm-started run = optim.lr x lr_scale. 1 by default: 0.3 measured no
    # better on validation (benchmarks/taxonomy_change.py --warm-lr-scales, 3 seeds).
    lr_scale: float = 1.0
    # Carried-over tags learn from (1 - distill) x label + distill x the parent's prediction, and
    # blanks from the prediction (training.warmstart.distill_targets); 0 = the labels alone. The
    # targets become soft: methods that act on exact 0/1 labels (DivideMix's clean split, large-loss
    # rejection, UDA's TSA) leave those tags alone; the BCE-based ones (the default) learn from them.
    distill: float = 0.0
    # Weight-space ensembling (WiSE-FT): after training, the model is alpha x its trained weights +
    # (1 - alpha) x its warm-started ones, alpha the candidate with the best validation mAP ([1] = off).
    # A fine-tuned model forgets some of what its parent knew; part way back keeps it. On test
    # (benchmarks/taxonomy_change.py --warm-mixes '1;1,0.8,0.6,0.4', 4 seeds) it traded carried-over
    # mAP -0.003 for new-tag mAP +0.017; its validation score cannot fall below no mix (1 is a candidate).
    mix: list[float] = field(default_factory=lambda: [1.0, 0.8, 0.6, 0.4])


@dataclass
class FlagConfig:
    """How flags are calibrated on validation (``training.flags``; DESIGN.md: a flag is a claim)."""

    target_precision: float = 0.8  # a tag is flagged only at a threshold reaching this precision on validation
    min_flagged: int = 5  # fewest flagged validation creatives a precision may rest on
    confidence: float = 0.9  # the precision is its lower confidence bound at this level (training.flags)
    # The annotators' rates the precision is corrected for; null = estimated from validation (anchors).
    miss_rate: float | None = None
    fp_rate: float | None = None


@dataclass
class HeadConfig:
    """The last stage: the tag head refitted on the labeled set over the trained features (``training.refit``)."""

    refit: bool = True
    backbone_scale: float = 0.3  # the backbone's standardised features scaled by this (the other features by 1)
    c: float = 0.03  # inverse L2 strength of the per-tag logistic regressions (scikit-learn's C)
    # The trained head's weight in the refitted head (its logits mixed with the refit's) on the tags the recipe's
    # method taught from the pool (Method.taught_tags: defect synthesis's defects; supervised training has none):
    # what a refit on the labels alone drops. Chosen on the regime grid's held-out split (benchmarks/head_refit.py).
    keep: float = 0.25
    max_rows: int = 20000  # at most this many labeled creatives (a seeded sample beyond)


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    flags: FlagConfig = field(default_factory=FlagConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads (None = torch's default)
    amp: bool = True  # bf16 autocast for the training step, on CUDA only
    channels_last: bool = True  # channels-last memory format, on CUDA only
    experiment: str = "creative-qa"
    run_name: str | None = None
    output_dir: str | None = None  # checkpoints; None = <home>/runs/<run name>
    register_as: str = "creative-qa"  # registered model name used by export

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"optim.lr": 0.003, ...}``: one MLflow param per field."""
        out: dict[str, Any] = {}

        def walk(prefix: str, d: dict[str, Any]) -> None:
            for k, v in d.items():
                key = f"{prefix}{k}"
                if isinstance(v, dict) and k != "params":
                    walk(key + ".", v)
                else:
                    out[key] = v

        walk("", self.to_dict())
        return out


class ConfigError(ValueError):
    pass


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` (parsed from YAML) fits a config field's type hint."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return True


def _describe(hint: Any) -> str:
    """A type hint in words: ``int | None`` -> "an integer or null"."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint) or (Any,)
        return f"a list of {_describe(item).split(' ', 1)[-1]}s"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a text", type(None): "null"}
    return words.get(hint, "a mapping" if typing.get_origin(hint) is dict else str(hint))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build_config(cls: type, data: dict[str, Any], where: str, strict: bool = True) -> Any:
    """Build a config dataclass from a dict. ``strict=False`` (old checkpoints) drops unknown fields.

    Every value is checked against its field's type: a wrong one is a ``ConfigError`` naming ``where``.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        if k not in hints:
            if not strict:
                log.warning("%s.%s: ignoring a field this version does not know", where, k)
                continue
            raise ConfigError(f"{where}.{k}: unknown field{_suggest(k, hints)} (allowed: {', '.join(hints)})")
        sub = _SECTIONS.get((cls, k))
        if sub:
            kwargs[k] = build_config(sub, v or {}, f"{where}.{k}", strict)
            continue
        if strict and not _type_ok(v, hints[k]):
            raise ConfigError(f"{where}.{k}: expected {_describe(hints[k])}, got {v!r}")
        kwargs[k] = v
    return cls(**kwargs)


def _suggest(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_override(item: str) -> tuple[list[str], Any]:
    """An override ``a.b=value`` checked against the config's fields: its key path and parsed value.

    Raises ``ConfigError`` naming the override (a command-line typo is never blamed on the recipe).
    """
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.field=value, e.g. optim.epochs=3")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    value = _parse_value(text)
    cls: type = TrainConfig
    for i, part in enumerate(parts):
        hints = _hints(cls)
        here = ".".join(parts[: i + 1])
        if part not in hints:
            section = ".".join(parts[:i]) or "the config"
            raise ConfigError(
                f"override {item!r}: {here} is not a field{_suggest(part, hints)} "
                f"(fields of {section}: {', '.join(hints)})"
            )
        if cls is MethodConfig and part == "params":
            return parts, value  # a method's own parameters: checked by the method
        sub = _SECTIONS.get((cls, part))
        if sub is None:
            if i != len(parts) - 1:
                raise ConfigError(f"override {item!r}: {here} is a value, not a section")
            if not _type_ok(value, hints[part]) and _type_ok(text, hints[part]):
                value = text  # a text field given what YAML reads as a number (a path such as 2024)
            if not _type_ok(value, hints[part]):
                raise ConfigError(f"override {item!r}: {here} must be {_describe(hints[part])}, got {text!r}")
            return parts, value
        cls = sub
    first = next(iter(_hints(cls)))
    raise ConfigError(f"override {item!r}: {key} is a section; set one of its fields, e.g. {key}.{first}=...")


_SECTIONS = {
    (TrainConfig, "data"): DataConfig,
    (TrainConfig, "model"): ModelConfig,
    (TrainConfig, "optim"): OptimConfig,
    (TrainConfig, "method"): MethodConfig,
    (TrainConfig, "warm_start"): WarmStartConfig,
    (TrainConfig, "flags"): FlagConfig,
    (TrainConfig, "head"): HeadConfig,
}


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML, each checked by ``check_override``) to a nested dict."""
    for item in overrides:
        parts, value = check_override(item)
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = value
    return data


def recipe_path(name_or_path: str) -> Path:
    """A recipe by file path, or by name from ``training/configs/``."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    ref = resources.files("training") / "configs" / f"{name_or_path}.yaml"
    if ref.is_file():
        return Path(str(ref))
    raise ConfigError(f"recipe {name_or_path!r} not found (a YAML path, or one of: {', '.join(list_recipes())})")


def list_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in (resources.files("training") / "configs").iterdir() if p.name.endswith(".yaml"))


def load_config(recipe: str | None = "default", overrides: list[str] | None = None) -> TrainConfig:
    data: dict[str, Any] = {}
    if recipe:
        path = recipe_path(recipe)
        data = yaml.safe_load(path.read_text()) or {}
        where = str(path)
    else:
        where = "<config>"
    recipe_method = (data.get("method") or {}).get("name")
    data = apply_overrides(data, overrides or [])
    keys = [o.split("=", 1)[0].strip() for o in overrides or []]
    method = data.get("method") or {}
    if (
        "method.name" in keys
        and method.get("name") != recipe_method
        and not any(k.startswith("method.params") for k in keys)
    ):
        # NOTE: a recipe's method parameters belong to its method: switching the method drops them
        # (another method would reject them) unless the overrides give new ones.
        if method.get("params"):
            log.info("method %s: dropping the recipe's parameters for %s", method["name"], recipe_method)
        method["params"] = {}
    return build_config(TrainConfig, data, where)


# Paths in a config, made absolute when a run starts so that it resumes from any folder.
PATH_FIELDS = ("data.labeled", "data.unlabeled", "data.val", "data.test", "data.taxonomy", "data.mapping",
               "model.weights", "warm_start.parent", "output_dir")  # fmt: skip


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with every relative path that exists here (and the output folder) made absolute."""
    for key in PATH_FIELDS:
        *sections, name = key.split(".")
        node = cfg
        for sec in sections:
            node = getattr(node, sec)
        value = getattr(node, name)
        if not value or "://" in value or ":/" in value or Path(value).is_absolute():
            continue
        if key == "output_dir" or Path(value).exists():
            setattr(node, name, str(Path(value).absolute()))
    return cfg
