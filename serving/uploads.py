"""Reading uploads: a multipart ``file`` (or several), or a raw image/video body, within size limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

ACCEPTED_PREFIXES = ("image/", "video/")
ACCEPTED_TYPES = {"application/octet-stream", ""}


class ItemRejected(Exception):
    """One file of a batch refused (status and reason), while the others go on."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _mib(limit: int) -> str:
    return f"{limit / (1 << 20):g} MiB"


def type_error(content_type: str | None) -> str | None:
    """Why this content type is refused, or None when it is an image, a video or unnamed bytes."""
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct.startswith(ACCEPTED_PREFIXES) or ct in ACCEPTED_TYPES:
        return None
    return f"unsupported media type {ct!r}: send an image or a video"


def check_length(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 64 * 1024:
        raise HTTPException(status_code=413, detail=f"upload is larger than {_mib(limit)}")


async def read_limited(stream: AsyncIterator[bytes], limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=f"upload is larger than {_mib(limit)}")
        chunks.append(chunk)
    return b"".join(chunks)


async def _receive_by(receive, end: float):
    """``receive()``, or ``TimeoutError`` at loop time ``end`` (a timer: cheaper than ``wait_for``'s task)."""
    if hasattr(asyncio, "timeout_at"):  # Python 3.11+
        async with asyncio.timeout_at(end):
            return await receive()
    return await asyncio.wait_for(receive(), timeout=max(0.0, end - asyncio.get_running_loop().time()))


def _body_guarded(request: Request, limit: int, deadline_s: float) -> Request:
    """The request with its body cut off at ``limit`` (+ multipart overhead) and at ``deadline_s`` as it streams in.

    Content-Length is checked up front, but a chunked body has none, and Starlette spools file
    parts to disk without a cap: without the cap a client could fill the disk before any check.
    The deadline bounds how long a slow (or stalled) client holds the queue place it was admitted to.
    """
    receive, seen = request.receive, 0
    end = asyncio.get_running_loop().time() + deadline_s

    async def guarded():
        nonlocal seen
        try:
            message = await _receive_by(receive, end)
        except (TimeoutError, asyncio.TimeoutError) as e:  # NOTE: distinct classes before Python 3.11
            detail = f"upload not received within {deadline_s:g} s (CREATIVE_QA_MAX_BODY_S)"
            raise HTTPException(status_code=408, detail=detail) from e
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit + 64 * 1024:
                raise HTTPException(status_code=413, detail=f"upload is larger than {_mib(limit)}")
        return message

    return Request(request.scope, guarded)


async def _form(request: Request, max_files: int, limit: int, total: int):
    try:
        return await request.form(max_files=max_files, max_fields=16, max_part_size=limit)
    except HTTPException:
        raise
    except Exception as e:  # malformed multipart: the client's fault
        raise HTTPException(status_code=400, detail=f"malformed multipart body: {e}") from e


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    """One uploaded file's bytes; ``ItemRejected`` when it is the wrong type, too large or empty."""
    reason = type_error(upload.content_type)
    if reason:
        raise ItemRejected(415, reason)
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ItemRejected(413, f"upload is larger than {_mib(limit)}")
    if not data:
        raise ItemRejected(422, "empty upload")
    return data


async def single_payload(request: Request, limit: int, deadline_s: float) -> tuple[bytes, str | None]:
    """The uploaded bytes and file name, from multipart ``file`` or the raw body (within ``deadline_s``)."""
    check_length(request, limit)
    request = _body_guarded(request, limit, deadline_s)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await _form(request, 1, limit, limit)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(status_code=422, detail="multipart body has no 'file' field")
        try:
            return await read_upload(upload, limit), upload.filename
        except ItemRejected as e:
            raise HTTPException(status_code=e.status, detail=e.detail) from e
    reason = type_error(ctype)
    if reason:
        raise HTTPException(status_code=415, detail=reason)
    data = await read_limited(request.stream(), limit)
    if not data:
        raise HTTPException(status_code=422, detail="empty upload: send the creative as a multipart 'file' or the body")
    return data, request.headers.get("x-filename")


async def batch_uploads(
    request: Request, max_files: int, file_limit: int, total_limit: int, deadline_s: float
) -> list[UploadFile]:
    """The multipart ``files`` of a batch request (at least one, at most ``max_files``), within ``deadline_s``."""
    check_length(request, total_limit)
    request = _body_guarded(request, total_limit, deadline_s)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(status_code=415, detail="send the creatives as multipart/form-data 'files' fields")
    form = await _form(request, max_files, file_limit, total_limit)
    uploads = [u for u in form.getlist("files") if isinstance(u, UploadFile)]
    if not uploads:
        raise HTTPException(status_code=422, detail="multipart body has no 'files' field")
    return uploads
