"""Response models (so ``/docs`` documents them) and the request bodies the routes read by hand."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ModelRef(BaseModel):
    name: str
    version: str
    taxonomy_version: str


class FrameScores(BaseModel):
    time_s: float = Field(description="the frame's time in the video, seconds")
    quality: float = Field(ge=0, le=1)
    tags: dict[str, float] = Field(description="tag -> probability for this frame")


class Scores(BaseModel):
    """Scores of one creative (DESIGN.md's contract)."""

    quality: float = Field(ge=0, le=1, description="1.0 for a clean, well-composed creative")
    tags: dict[str, float] = Field(description="tag -> probability in [0, 1]")
    flags: list[str] = Field(description="reliable tags at or above their threshold (see /v1/model's unreliable)")
    model: ModelRef
    frames: list[FrameScores] | None = Field(
        default=None, description="videos and animations: per-frame scores (the top level aggregates them)"
    )


class ErrorDetail(BaseModel):
    detail: str


class ItemError(BaseModel):
    status: int = Field(description="the status this file alone would have got (413, 415, 422)")
    detail: str


class BatchItem(BaseModel):
    index: int = Field(description="position of the file in the request")
    filename: str | None = None
    result: Scores | None = None
    error: ItemError | None = None


class BatchScores(BaseModel):
    results: list[BatchItem]


class ModelDescription(BaseModel):
    name: str
    version: str
    taxonomy_version: str
    taxonomy: dict[str, Any]
    thresholds: dict[str, float]
    unreliable: dict[str, str] = Field(
        description="tags this model never flags, and why: it cannot rank them above their prior, or no "
        "threshold reaches the target precision on validation (their probabilities are still returned)"
    )
    flag_policy: dict[str, Any] = Field(
        description="target precision, the annotator rates it was corrected for, and per tag: threshold, "
        "reliable, reason, validation AP, observed and estimated true share, validation precision"
    )
    preprocess: dict[str, Any]
    providers: list[str]
    source: str
    metadata: dict[str, str]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    detail: str | None = None
    model: ModelRef | None = None


class ReloadResult(BaseModel):
    status: str
    model: ModelRef
    previous: ModelRef


BINARY = {"type": "string", "format": "binary"}
ERRORS = {"model": ErrorDetail}
# NOTE: also what makes openapi-python-client 0.29 import `Unset`, which it names (but does not import)
# for every body with two content types (its issue #1451)
FILENAME_HEADER = {
    "name": "X-Filename",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "the raw body's file name (its extension helps tell a video); multipart: the part's own name",
}


def upload_body(field: str, many: bool = False) -> dict[str, Any]:
    """OpenAPI ``requestBody``: a multipart ``field`` (one file or several), or the raw bytes.

    The raw body is declared as ``application/octet-stream`` alone: client generators
    (openapi-python-client) cannot handle wildcard types such as ``image/*``, and the server
    accepts any ``image/*`` or ``video/*`` type as well (``serving/uploads.py``), as the
    description says. The batch's ``maxItems`` comes from settings (``create_app``).
    """
    prop = {"type": "array", "items": BINARY, "minItems": 1} if many else BINARY
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {field: prop}, "required": [field]},
        }
    }
    if many:
        return {"required": True, "content": content}
    content["application/octet-stream"] = {"schema": BINARY}
    return {
        "required": True,
        "description": f"a multipart `{field}`, or the creative as the raw body: `application/octet-stream` "
        "or its own `image/*` or `video/*` Content-Type (name it in an `X-Filename` header if you like)",
        "content": content,
    }
