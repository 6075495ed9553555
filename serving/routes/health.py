"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Ready when a model is loaded; 503 otherwise (with the load error, if any)."""
    if getattr(request.app.state, "scorer", None) is None:
        return JSONResponse({"status": "not ready", "detail": getattr(request.app.state, "load_error", None)}, 503)
    return JSONResponse({"status": "ready"})
