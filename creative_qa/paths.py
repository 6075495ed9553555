"""The project's home folder: the embedded MLflow store, runs and demo data live under it."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$CREATIVE_QA_HOME``, else ``~/.creative-qa``; created on first use."""
    p = Path(os.environ.get("CREATIVE_QA_HOME") or Path.home() / ".creative-qa").expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the embedded SQLite store under :func:`home`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


MODEL_ENV = "CREATIVE_QA_MODEL"
DEFAULT_MODEL_URI = "models:/creative-qa@champion"  # what score, batch-score and serve load unless told
