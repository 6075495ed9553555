"""The FastAPI app: built here, routes in ``serving/routes/``, the model loaded in the lifespan."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from creative_qa.scorer import Scorer
from serving.engine import Engine, load_scorer
from serving.metrics import Metrics, MetricsMiddleware
from serving.routes import admin, health, model, page, score
from serving.settings import Settings, get_settings

log = logging.getLogger(__name__)

__all__ = ["create_app", "load_scorer"]


def _declare_limits(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Put the request limits that come from settings into the spec, so a schema-valid request is accepted."""
    body = schema["paths"]["/v1/score/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    body["schema"]["properties"]["files"]["maxItems"] = settings.max_batch_files
    return schema


def create_app(settings: Settings | None = None, scorer: Scorer | None = None) -> FastAPI:
    """Build the app; pass ``scorer`` to serve an already loaded model (tests do)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings, app.state.metrics = settings, metrics
        app.state.engine, app.state.load_error = None, None
        app.state.reload_lock, app.state.background = asyncio.Lock(), set()
        loaded = scorer
        if loaded is None:
            try:
                loaded = await asyncio.to_thread(load_scorer, settings)
            except Exception as e:  # keep the process up; /readyz reports why
                app.state.load_error = f"{type(e).__name__}: {e}"
                log.error("could not load model %s: %s", settings.model, app.state.load_error)
        if loaded is not None:
            engine = Engine(loaded, settings, metrics)
            await engine.start()
            app.state.engine = engine
            metrics.set_model(loaded.model_info)
            log.info("serving %s on %s", loaded.model_info, loaded.onnx.providers)
        yield
        if app.state.engine is not None:
            await app.state.engine.close(timeout_s=10)

    app = FastAPI(
        title="creative-qa",
        version="0.1.0",
        lifespan=lifespan,
        description="Quality and tag scores for advertising creatives (images and video).",
    )
    app.include_router(page.router)
    app.include_router(health.router)
    app.include_router(model.router)
    app.include_router(score.router)
    app.include_router(admin.router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            # NOTE: a copy: the routes' openapi_extra dicts are module constants, shared by every app
            schema = _declare_limits(copy.deepcopy(schema), settings)
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "CREATIVE_QA_ADMIN_TOKEN",
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
