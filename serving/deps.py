"""Named dependency types for the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from creative_qa.scorer import Scorer
from serving.engine import Engine
from serving.metrics import Metrics
from serving.settings import Settings


async def get_engine(request: Request) -> Engine:
    # NOTE: async, so the request reaches admission without a thread hop in which a reload could close it.
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        reason = getattr(request.app.state, "load_error", None) or "no model is loaded"
        raise HTTPException(status_code=503, detail=f"no model is loaded: {reason}")
    return engine


def get_scorer(engine: Annotated[Engine, Depends(get_engine)]) -> Scorer:
    return engine.scorer


def app_settings(request: Request) -> Settings:
    return request.app.state.settings


def app_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


EngineDep = Annotated[Engine, Depends(get_engine)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
SettingsDep = Annotated[Settings, Depends(app_settings)]
MetricsDep = Annotated[Metrics, Depends(app_metrics)]
