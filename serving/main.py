"""The FastAPI app: built here, routes in ``serving/routes/``, the model loaded in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from creative_qa.scorer import Scorer
from serving.routes import health, model, score
from serving.settings import Settings, get_settings

log = logging.getLogger(__name__)


def load_scorer(settings: Settings) -> Scorer:
    providers = [p.strip() for p in settings.providers.split(",")] if settings.providers else None
    return Scorer(settings.model, providers=providers, max_frames=settings.max_frames)


def create_app(settings: Settings | None = None, scorer: Scorer | None = None) -> FastAPI:
    """Build the app; pass ``scorer`` to serve an already loaded model (tests do)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.scorer, app.state.load_error = scorer, None
        if app.state.scorer is None:
            try:
                app.state.scorer = load_scorer(settings)
                log.info("serving %s", app.state.scorer.model_info)
            except Exception as e:  # keep the process up; /readyz reports why
                app.state.load_error = f"{type(e).__name__}: {e}"
                log.error("could not load model %s: %s", settings.model, app.state.load_error)
        yield

    app = FastAPI(
        title="creative-qa",
        version="0.1.0",
        lifespan=lifespan,
        description="Quality and tag scores for advertising creatives (images and video).",
    )
    app.include_router(health.router)
    app.include_router(model.router)
    app.include_router(score.router)
    return app
