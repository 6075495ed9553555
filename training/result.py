"""What a training run returns: its MLflow run, its final checkpoint, its metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainResult:
    run_id: str
    checkpoint: Path
    metrics: dict[str, float]
    thresholds: dict[str, float]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # views through the model and its teachers: train_views (forward + backward), forward_only_views
    passes: dict[str, int] = field(default_factory=dict)
