"""The base every learning method extends: one method is one small class.

A method declares its own hyper-parameters (as keyword arguments, from
``method.params`` in the recipe) and implements ``train_step``. The loop, the
optimiser, evaluation, checkpoints and MLflow logging live once, in
``training.loop``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


class Method:
    name: ClassVar[str] = "base"
    uses_unlabeled: ClassVar[bool] = False  # the loop feeds an unlabeled batch to train_step

    def __init__(self, model: nn.Module, quality_weight: float = 1.0, **params: Any):
        if params:
            raise TypeError(f"method {self.name!r} got unknown parameters: {', '.join(params)}")
        self.model = model
        self.quality_weight = quality_weight

    def train_step(
        self, batch: dict[str, torch.Tensor], unlabeled: dict[str, torch.Tensor] | None, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One step's loss (to backpropagate) and scalars to log."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called after the optimiser step (EMA updates and the like)."""

    def on_epoch_start(self, epoch: int, labeled: Any, device: torch.device) -> dict[str, float]:
        """Called before each epoch with the labeled dataset (loss modelling and the like); returns scalars to log."""
        return {}

    def eval_model(self) -> nn.Module:
        """The network to evaluate and export (a teacher, where the method keeps one)."""
        return self.model

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}") from None
