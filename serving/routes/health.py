"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serving.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "no model"}})
def readyz(request: Request) -> JSONResponse:
    """Ready when a model is loaded; 503 otherwise, saying what is missing and how to fix it."""
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        detail = getattr(request.app.state, "load_error", None) or "no model is loaded"
        return JSONResponse(Readiness(status="not ready", detail=detail).model_dump(exclude_none=True), 503)
    return JSONResponse(Readiness(status="ready", model=engine.scorer.model_info).model_dump(exclude_none=True))
