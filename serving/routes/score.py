"""Scoring routes: one creative per request, as a multipart ``file`` or a raw body."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from creative_qa.media import MediaError
from serving.deps import ScorerDep, SettingsDep

router = APIRouter(prefix="/v1", tags=["score"])

ACCEPTED_PREFIXES = ("image/", "video/")
ACCEPTED_TYPES = {"application/octet-stream", ""}


def _check_type(content_type: str | None) -> None:
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct.startswith(ACCEPTED_PREFIXES) or ct in ACCEPTED_TYPES:
        return
    raise HTTPException(status_code=415, detail=f"unsupported media type {ct!r}: send an image or a video")


async def _read_limited(stream, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=f"upload is larger than {limit // (1 << 20)} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


async def _payload(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The uploaded bytes and file name, from multipart ``file`` or the raw body."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 64 * 1024:
        raise HTTPException(status_code=413, detail=f"upload is larger than {limit // (1 << 20)} MiB")
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_part_size=limit)
        except Exception as e:  # malformed multipart: the client's fault
            raise HTTPException(status_code=400, detail=f"malformed multipart body: {e}") from e
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(status_code=422, detail="multipart body has no 'file' field")
        _check_type(upload.content_type)
        data = await upload.read()
        if len(data) > limit:
            raise HTTPException(status_code=413, detail=f"upload is larger than {limit // (1 << 20)} MiB")
        return data, upload.filename
    _check_type(ctype)
    return await _read_limited(request.stream(), limit), request.headers.get("x-filename")


@router.post(
    "/score",
    responses={
        413: {"description": "too large"},
        415: {"description": "not an image or video"},
        422: {"description": "undecodable"},
    },
)
async def score(request: Request, scorer: ScorerDep, settings: SettingsDep) -> dict[str, Any]:
    """Score one creative: ``quality``, ``tags``, ``flags``, ``model`` (and ``frames`` for a video)."""
    limit = int(settings.max_upload_mb * (1 << 20))
    data, filename = await _payload(request, limit)
    if not data:
        raise HTTPException(status_code=422, detail="empty upload")
    try:
        return await run_in_threadpool(scorer.score_bytes, data, filename)
    except (MediaError, ValueError) as e:
        raise HTTPException(status_code=422, detail=str(e)) from e
