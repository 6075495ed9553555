"""What model is being served."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serving.deps import ScorerDep

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/model")
def model_info(scorer: ScorerDep) -> dict[str, Any]:
    """Name, version, taxonomy, thresholds, preprocessing and onnxruntime providers."""
    return scorer.describe()
