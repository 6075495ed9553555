"""The base every learning method extends: one method is one small class in one file.

A method declares its own hyper-parameters (keyword arguments, from ``method.params``
in the recipe) and implements ``train_step``. The loop, the optimiser, evaluation,
checkpoints and MLflow logging live once, in ``training.loop``, which never names a
method: everything a method needs from it is declared here.

What the loop gives a method (the contract):

* ``train_step(batch, unlabeled, step)`` every step. ``batch`` holds ``images``
  (uint8 ``(B, V, S, S, 3)``: the views the scorer sees), ``labels`` (``(B, T)``,
  NaN = blank, never a negative), ``quality`` (``(B,)``, NaN = unknown), ``index``
  (the row in the labeled dataset, for per-sample state) and ``crop_pool`` (uint8
  ``(B, P, S, S, 3)``: further detail windows of the same creatives, for strong
  views; ``P`` may be 0). ``unlabeled`` is a batch of the unlabeled pool (same keys,
  labels all blank) of ``unlabeled_ratio`` x the labeled batch size, or ``None``
  when the method does not set ``uses_unlabeled`` or no pool was given.
* ``on_epoch_start(epoch, labeled, device, unlabeled)`` before each epoch, with the
  whole labeled dataset and the unlabeled pool (``training.data.CreativeDataset``;
  ``unlabeled`` is ``None`` without a pool), for per-epoch work such as loss modelling
  or scoring the pool; what it returns is logged.
* ``after_step(step)`` after each optimiser step (EMA updates and the like).
* ``eval_model()``: the network that is evaluated and exported.
* ``extra_parameters()``: parameters the method owns beside the model's (a projection
  head), which the loop's optimiser trains with the model.
* ``state_dict()`` / ``load_state_dict()``: method state saved in checkpoints.
* ``label_free``: set by a stage that learns without labels (self-supervised pretraining):
  it trains the backbone only, and the tests hold it to that instead of to the label rules.
* ``stages(cfg, resume)`` / ``staged(cfg, resume)``: a method with stages (rounds,
  pretraining then fine-tuning) yields each stage's ``Stage`` (a config, and a checkpoint
  to resume) and receives that stage's ``TrainResult`` back; ``staged`` says when it does.
  ``training.loop.train`` runs the stages, owns the MLflow parent run and returns the
  last result; the default is one ordinary run.
* Before training, the loop sets ``self.tags`` (the taxonomy's tag names, in head order)
  and ``self.spec`` (the ``PreprocessSpec`` of the views), for methods that need to know
  what a tag or a view is. ``self.weak(images)`` and ``self.strong(images, pool)`` are the
  label-preserving augmentations (``training.augment``) for those views: the native-pixel
  crops and the grid view keep their places, only the detail crops move.

A new method is a new file in ``training/methods/`` (found by
``discover()``, no list to edit), or any ``.py`` file named by path in the recipe
(``method.name: path/to/my_method.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from training import augment

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.result import TrainResult

METHODS: dict[str, type[Method]] = {}


def register(name: str):
    """Class decorator: make a method available to recipes as ``method.name: <name>``."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


@dataclass(frozen=True)
class Stage:
    """One ordinary run of the loop that a method asks for: its config, and the checkpoint it resumes."""

    cfg: TrainConfig
    resume: str | Path | None = None


class Method:
    name: ClassVar[str] = "base"
    uses_unlabeled: ClassVar[bool] = False  # the loop feeds an unlabeled batch to train_step
    label_free: ClassVar[bool] = False  # a stage that reads no label and trains no head (pretraining)
    unlabeled_ratio: int = 1  # unlabeled batch = unlabeled_ratio x labeled batch size
    tags: list[str] = []  # set by the loop: tag names in head order
    spec: Any = None  # set by the loop: the views' creative_qa.preprocess.PreprocessSpec

    def __init__(self, model: nn.Module, quality_weight: float = 1.0, **params: Any):
        if params:
            raise TypeError(f"method {self.name!r} got unknown parameters: {', '.join(params)}")
        self.model = model
        self.quality_weight = quality_weight

    @classmethod
    def staged(cls, cfg: TrainConfig, resume: str | Path | None = None) -> bool:
        """Whether ``cfg`` trains in several stages (nested under one MLflow parent run). Staged methods override."""
        return False

    @classmethod
    def stages(cls, cfg: TrainConfig, resume: str | Path | None = None) -> Generator[Stage, TrainResult, None]:
        """The runs to train, in order; each ``yield`` gets that stage's result. Default: one ordinary run."""
        yield Stage(cfg, resume)

    @property
    def native_views(self) -> int:
        """Views at the end of each batch that keep their place under augmentation: native crops, the grid view."""
        s = self.spec
        return 0 if s is None else s.native_crops + s.grid_view

    def weak(self, images: torch.Tensor) -> torch.Tensor:
        """``training.augment.weak`` for this run's views."""
        return augment.weak(images, native=self.native_views)

    def strong(self, images: torch.Tensor, pool: torch.Tensor | None = None) -> torch.Tensor:
        """``training.augment.strong`` for this run's views: crops re-drawn from ``pool``, views flipped and rotated."""
        return augment.strong(images, pool, native=self.native_views)

    def train_step(
        self, batch: dict[str, torch.Tensor], unlabeled: dict[str, torch.Tensor] | None, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One step's loss (to backpropagate) and scalars to log."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called after the optimiser step (EMA updates and the like)."""

    def on_epoch_start(self, epoch: int, labeled: Any, device: torch.device, unlabeled: Any = None) -> dict[str, float]:
        """Before each epoch, with the labeled set and the pool (loss modelling and such); returns scalars to log."""
        return {}

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters the method owns beside the model's (a projection head), optimised with it."""
        return []

    def eval_model(self) -> nn.Module:
        """The network to evaluate and export (a teacher, where the method keeps one)."""
        return self.model

    def taught_tags(self) -> list[str]:
        """Tags whose head rows the method taught from more than the labeled set (defects it synthesised on the
        pool, with labels it knows): the head refit keeps ``head.keep`` of the trained rows there
        (``training.refit``). None by default: a refit on the labels is the better head for what labels taught."""
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


def discover() -> None:
    """Import every module of ``training.methods`` so each registers its methods."""
    pkg = importlib.import_module("training.methods")
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"training.methods.{info.name}")


def _load_file(path: Path) -> type[Method]:
    """Import a method from a ``.py`` file; the file must register exactly one method."""
    if not path.is_file():
        raise ValueError(f"method file {path} not found")
    before = dict(METHODS)
    mod_name = f"creative_qa_user_method_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    new = [cls for n, cls in METHODS.items() if before.get(n) is not cls]
    if len(new) != 1:
        raise ValueError(f"{path}: a method file must register exactly one method with @register, found {len(new)}")
    return new[0]


def get_method(name: str) -> type[Method]:
    """A method by registered name, or by the path of a ``.py`` file that registers one."""
    if name.endswith(".py"):
        return _load_file(Path(name).expanduser())
    discover()
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}") from None
