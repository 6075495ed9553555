"""Serving settings: one class, read from ``CREATIVE_QA_*`` environment variables, built once."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CREATIVE_QA_", extra="ignore")

    model: str = "models:/creative-qa@champion"  # ONNX path or MLflow models:/ URI
    providers: str | None = None  # comma-separated onnxruntime providers; None = best available
    max_upload_mb: float = 25.0  # larger uploads get 413
    max_frames: int = 8  # frames sampled from a video or animated GIF


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
