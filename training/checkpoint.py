"""The one checkpoint format: what a training run saves, and what export, benchmarks and tests read.

A checkpoint is a plain dict on disk (``torch.save``), written then renamed so a run
killed mid-save keeps its previous one. ``Checkpoint`` names every field once::

    ckpt = Checkpoint.load("runs/<id>/last.pt")
    model = model_from_checkpoint(ckpt)      # training.model
    ckpt.step, ckpt.epoch, ckpt.run_id, ckpt.thresholds

Resume position: ``epoch`` is the epoch in progress and ``epoch_step`` how many of its
batches were consumed; ``epoch_done`` marks a checkpoint written after the epoch's
evaluation (resume then starts the next epoch). ``rng`` holds every generator the
step consumes (Python, NumPy, torch CPU and CUDA), so a resumed run draws the same
augmentations and dropout masks as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

SCHEMA = 2


@dataclass
class Checkpoint:
    config: dict[str, Any]  # TrainConfig.to_dict()
    taxonomy: dict[str, Any]  # Taxonomy.to_dict()
    preprocess: dict[str, Any]  # PreprocessSpec.to_dict()
    model: dict[str, torch.Tensor]  # the trained network's state dict
    eval_model: dict[str, torch.Tensor] | None = None  # the evaluated/exported network, when not `model`
    optimizer: dict[str, Any] | None = None
    method: dict[str, Any] = field(default_factory=dict)  # Method.state_dict() (EMA teacher and the like)
    epoch: int = 0  # epoch in progress (0-based)
    epoch_step: int = 0  # batches of `epoch` already consumed
    epoch_done: bool = True  # `epoch` finished and evaluated: resume starts epoch + 1
    step: int = 0  # optimiser steps so far
    run_id: str | None = None
    thresholds: dict[str, float] | None = None  # calibrated; set on the final checkpoint
    flags: dict[str, Any] | None = None  # creative_qa.flags.FlagPolicy.to_dict(); set with thresholds
    rng: dict[str, Any] | None = None  # see capture_rng()
    schema: int = SCHEMA

    @classmethod
    def for_model(cls, model: torch.nn.Module, config: Any, taxonomy: Any, spec: Any, run_id: str = "untrained"):
        """A checkpoint of a bare network (no training state): fixtures, benchmarks, exports of a fresh model.

        ``config``: a ``TrainConfig``; ``taxonomy``: a ``Taxonomy``; ``spec``: a ``PreprocessSpec``.
        """
        return cls(config.to_dict(), taxonomy.to_dict(), spec.to_dict(), model.state_dict(), run_id=run_id)

    # --- resume position --------------------------------------------------------------
    def resume_position(self) -> tuple[int, int]:
        """``(epoch, batches of it already consumed)`` to continue from."""
        return (self.epoch + 1, 0) if self.epoch_done else (self.epoch, self.epoch_step)

    # --- io ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        d = dict(d)
        if "torch_rng" in d:  # schema 1: only the torch CPU generator, epoch checkpoints only
            d["rng"] = {"torch": d.pop("torch_rng")}
        names = {f.name for f in dataclasses.fields(cls)}
        missing = {"config", "taxonomy", "preprocess", "model"} - d.keys()
        if missing:
            raise ValueError(f"not a creative-qa checkpoint: missing {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` atomically (temporary file in the same folder, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as f:
            torch.save(self.to_dict(), f)
        Path(f.name).replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> Checkpoint:
        """Read a checkpoint; ``map_location`` puts its tensors on this rank's device; ``mmap`` maps the
        tensors instead of reading them (cheap when only the config is wanted)."""
        try:
            d = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
        except FileNotFoundError:
            raise FileNotFoundError(f"checkpoint {path} not found") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: not a creative-qa checkpoint")
        return cls.from_dict(d)


def capture_rng() -> dict[str, Any]:
    """Every generator a training step draws from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any] | None) -> None:
    if not state:
        return
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
