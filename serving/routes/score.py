"""Scoring routes: one creative (multipart ``file`` or raw body), or several (multipart ``files``)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from creative_qa.media import MediaError, MediaLimitError
from serving.deps import SettingsDep, admitted
from serving.engine import Engine, QueueFull
from serving.schemas import ERRORS, FILENAME_HEADER, BatchItem, BatchScores, ItemError, Scores, upload_body
from serving.settings import Settings
from serving.uploads import ItemRejected, batch_uploads, read_upload, single_payload

router = APIRouter(prefix="/v1", tags=["score"])

SCORE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**ERRORS, "description": "malformed multipart body"},
    413: {**ERRORS, "description": "upload too large, or the creative is over a decoding limit"},
    415: {**ERRORS, "description": "not an image or a video"},
    422: {**ERRORS, "description": "empty or undecodable"},
    503: {**ERRORS, "description": "queue full (retry after `Retry-After` seconds) or no model loaded"},
}


def _busy(settings: Settings, e: QueueFull) -> HTTPException:
    return HTTPException(
        status_code=503, detail=f"server busy: {e}", headers={"Retry-After": str(settings.retry_after_s)}
    )


async def _score_one(engine: Engine, data: bytes, filename: str | None) -> dict[str, Any]:
    try:
        return await engine.score(data, filename)
    except MediaLimitError as e:
        raise ItemRejected(413, str(e)) from e
    except (MediaError, ValueError) as e:
        raise ItemRejected(422, str(e)) from e


@router.post(
    "/score",
    response_model=Scores,
    response_model_exclude_none=True,
    responses=SCORE_ERRORS,
    openapi_extra={"requestBody": upload_body("file"), "parameters": [FILENAME_HEADER]},
)
async def score(request: Request, settings: SettingsDep) -> Any:
    """Score one creative, sent as a multipart `file` or as the raw image/video body.

    Returns `quality`, `tags`, `flags`, `model` (and `frames` for a video).
    """
    limit = int(settings.max_upload_mb * (1 << 20))
    try:
        with admitted(request) as engine:
            data, filename = await single_payload(request, limit, settings.max_body_s)
            # NOTE: the engine builds exactly the Scores schema; a JSONResponse skips re-validating it.
            return JSONResponse(await _score_one(engine, data, filename))
    except QueueFull as e:
        raise _busy(settings, e) from e
    except ItemRejected as e:
        raise HTTPException(status_code=e.status, detail=e.detail) from e


async def _batch_item(engine: Engine, i: int, upload: UploadFile, limit: int) -> BatchItem:
    try:
        data = await read_upload(upload, limit)
        return BatchItem(
            index=i, filename=upload.filename, result=Scores(**await _score_one(engine, data, upload.filename))
        )
    except ItemRejected as e:
        return BatchItem(index=i, filename=upload.filename, error=ItemError(status=e.status, detail=e.detail))


@router.post(
    "/score/batch",
    response_model=BatchScores,
    response_model_exclude_none=True,
    responses=SCORE_ERRORS,
    openapi_extra={"requestBody": upload_body("files", many=True)},
)
async def score_batch(request: Request, settings: SettingsDep) -> Any:
    """Score several creatives sent as multipart `files` fields (at most `CREATIVE_QA_MAX_BATCH_FILES`, the
    `maxItems` of `files`): a result or an error per file.

    The request succeeds when it is itself well-formed; a bad file gets its own `error`
    (with the status it would have had alone) and the others are scored.
    """
    file_limit = int(settings.max_upload_mb * (1 << 20))
    total_limit = int(settings.max_batch_upload_mb * (1 << 20))
    try:
        # NOTE: admit the most a batch can hold before reading it, so a full server reads nothing.
        with admitted(request, min(settings.max_batch_files, settings.max_queue)) as engine:
            uploads = await batch_uploads(
                request, settings.max_batch_files, file_limit, total_limit, settings.max_body_s
            )
            items = await asyncio.gather(*(_batch_item(engine, i, u, file_limit) for i, u in enumerate(uploads)))
    except QueueFull as e:
        raise _busy(settings, e) from e
    return JSONResponse(BatchScores(results=list(items)).model_dump(exclude_none=True))
