"""Named dependency types for the routes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from creative_qa.scorer import Scorer
from serving.engine import Engine
from serving.metrics import Metrics
from serving.settings import Settings


def current_engine(request: Request) -> Engine:
    """The engine serving now, or 503 saying why there is none."""
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        reason = getattr(request.app.state, "load_error", None) or "no model is loaded"
        raise HTTPException(status_code=503, detail=f"no model is loaded: {reason}")
    return engine


@contextmanager
def admitted(request: Request, n: int = 1) -> Iterator[Engine]:
    """Admit ``n`` creatives to the engine serving *at this moment* and yield it.

    NOTE: read the engine here, not in a dependency: FastAPI resolves sync dependencies in a
    thread, and a reload that swaps engines in between would leave the request holding the old,
    closing one (-> a needless 503). Reading and admitting happen with no await between them, so
    the swap (one assignment on the same event loop) is seen either wholly or not at all.
    """
    engine = current_engine(request)
    with engine.admit(n):
        yield engine


async def get_scorer(request: Request) -> Scorer:
    return current_engine(request).scorer


async def app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def app_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


ScorerDep = Annotated[Scorer, Depends(get_scorer)]
SettingsDep = Annotated[Settings, Depends(app_settings)]
MetricsDep = Annotated[Metrics, Depends(app_metrics)]
