"""``POST /v1/admin/reload``: load a model beside the serving one, smoke-test it, swap atomically.

Needs ``Authorization: Bearer <CREATIVE_QA_ADMIN_TOKEN>``; with no token configured the
route answers 404 (disabled). If the new model fails to load or its smoke inference is
not sane, the old one keeps serving and the answer is 422 with the reason.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from serving.engine import Engine, load_scorer, smoke_test
from serving.schemas import ERRORS, ReloadResult
from serving.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/admin", tags=["admin"])

RELOAD_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "model": {
                        "type": "string",
                        "description": "ONNX path or models:/ URI; default: the configured CREATIVE_QA_MODEL",
                    }
                },
                "additionalProperties": False,
            }
        }
    },
}


def _authorize(request: Request, settings: Settings) -> None:
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        raise HTTPException(status_code=404, detail="reload is disabled: set CREATIVE_QA_ADMIN_TOKEN to enable it")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = settings.admin_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise HTTPException(
            status_code=401, detail="a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )


def _check_scheme(model: str, settings: Settings) -> None:
    """Refuse a URI whose scheme is not allowed: a stolen token must not make the server fetch from anywhere."""
    scheme = urlparse(model).scheme.lower()
    if len(scheme) > 1 and scheme not in settings.reload_scheme_set:  # one letter: a Windows drive, a path
        allowed = ", ".join(sorted(settings.reload_scheme_set)) or "none"
        raise HTTPException(
            status_code=422,
            detail=f"reload from {scheme!r} URIs is not allowed (CREATIVE_QA_RELOAD_SCHEMES: {allowed}; or a path)",
        )


async def _requested_model(request: Request) -> str | None:
    body = await request.body()
    if not body.strip():
        return None
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HTTPException(status_code=422, detail=f"body is not JSON: {e}") from e
    if not isinstance(payload, dict) or set(payload) - {"model"}:
        raise HTTPException(status_code=422, detail='body must be {"model": "<path or models:/ URI>"} or empty')
    model = payload.get("model")
    if "model" in payload and not isinstance(model, str):
        raise HTTPException(status_code=422, detail="'model' must be a string")
    if model is not None:
        _check_scheme(model, request.app.state.settings)
    return model


@router.post(
    "/reload",
    response_model=ReloadResult,
    responses={
        401: {**ERRORS, "description": "missing or wrong bearer token"},
        404: {**ERRORS, "description": "reload disabled (no CREATIVE_QA_ADMIN_TOKEN)"},
        409: {**ERRORS, "description": "another reload is running"},
        422: {**ERRORS, "description": "the new model failed to load or its smoke test; the old one keeps serving"},
    },
    openapi_extra={"requestBody": RELOAD_BODY, "security": [{"bearer": []}]},
)
async def reload(request: Request) -> Any:
    """Load a model (default: the configured one), smoke-test it, swap it in; on failure the old one keeps serving."""
    app = request.app
    settings: Settings = app.state.settings
    _authorize(request, settings)
    model = await _requested_model(request)
    lock = app.state.reload_lock
    if lock.locked():
        raise HTTPException(status_code=409, detail="another reload is running")
    async with lock:
        old: Engine | None = app.state.engine
        previous = old.scorer.model_info if old else {"name": "", "version": "", "taxonomy_version": ""}
        try:
            scorer = await run_in_threadpool(load_scorer, settings, model)
            await run_in_threadpool(smoke_test, scorer)
        except Exception as e:  # noqa: BLE001  (any failure keeps the old model)
            app.state.metrics.reloads.labels("failed").inc()
            keep = f"still serving {previous['name']} {previous['version']}" if old else "no model is serving"
            log.warning("reload of %s failed: %s", model or settings.model, e)
            raise HTTPException(status_code=422, detail=f"new model failed: {type(e).__name__}: {e}; {keep}") from e
        engine = Engine(scorer, settings, app.state.metrics)
        await engine.start()
        app.state.engine, app.state.load_error = engine, None  # NOTE: one assignment: requests see old or new
        app.state.metrics.set_model(scorer.model_info)
        app.state.metrics.reloads.labels("ok").inc()
        if old is not None:
            app.state.background.add(task := asyncio.create_task(old.close()))
            task.add_done_callback(app.state.background.discard)
        log.info("reloaded: %s -> %s", previous, scorer.model_info)
        return ReloadResult(status="reloaded", model=scorer.model_info, previous=previous)
