"""What model is being served, and its metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import MetricsDep, ScorerDep
from serving.schemas import ModelDescription

router = APIRouter(tags=["model"])


@router.get("/v1/model", response_model=ModelDescription)
def model_info(scorer: ScorerDep) -> ModelDescription:
    """Name, version, taxonomy, thresholds, unreliable tags, preprocessing and onnxruntime providers."""
    return ModelDescription(**scorer.describe())


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
def metrics(m: MetricsDep) -> Response:
    """Prometheus metrics: requests by route and status, latency, batch sizes, queue depth, decode failures, model."""
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
