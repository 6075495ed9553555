"""Serving settings: one class, read from ``CREATIVE_QA_*`` environment variables, built once."""

from __future__ import annotations

from functools import lru_cache

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from creative_qa.machine import cpu_count
from creative_qa.media import DEFAULT_MAX_FRAMES, DecodeLimits
from creative_qa.paths import DEFAULT_MODEL_URI

_LIMITS = DecodeLimits()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CREATIVE_QA_", extra="ignore")

    model: str = DEFAULT_MODEL_URI  # ONNX path or MLflow models:/ URI
    # onnxruntime providers: CREATIVE_QA_PROVIDERS, read where every session is made (creative_qa.onnx_model)
    max_upload_mb: float = 25.0  # larger uploads get 413
    max_body_s: float = 60.0  # the whole upload must arrive within this; slower: 408 (frees its queue place)
    max_frames: int = DEFAULT_MAX_FRAMES  # frames sampled from a video or animated GIF

    # Decoding limits (the same variables creative_qa.media reads for batch scoring and training).
    max_frame_pixels: int = _LIMITS.max_frame_pixels  # a still, GIF canvas or video frame; over: 413
    max_duration_s: float = _LIMITS.max_duration_s  # longer videos: 413
    max_decoded_frames: int = _LIMITS.max_decoded_frames  # frames decoded to reach the samples; over: 413
    max_decode_s: float = _LIMITS.max_decode_s  # wall time of one decode; over: 413

    # Throughput and back-pressure.
    # gather concurrent requests into one onnxruntime run; None (auto) = on where a GPU provider serves:
    # on CPU a batch costs the same per creative (benchmarks/api_load.py) and would only add its wait
    batching: bool | None = None
    max_batch_size: int = 32  # frames per onnxruntime run
    max_wait_ms: float = 2.0  # how long a batch waits for more requests once the first arrives
    batch_buckets: str = "1,2,4,8,16,32"  # batch sizes the model sees when padding (GPU)
    pad_to_buckets: bool | None = None  # None: pad when a GPU provider (CUDA, TensorRT) serves
    max_queue: int = 64  # creatives being decoded, queued or run; one more gets 503 + Retry-After
    retry_after_s: int = 1  # the Retry-After of a 503
    decode_workers: int = 0  # threads decoding and preprocessing; 0 = 4 per core (see Engine)
    decode_megapixels: float = 64.0  # still-image pixels being decoded at once, over all threads
    ort_threads: int = 0  # onnxruntime intra-op threads; 0 = cores (batching) or cores / decode_workers

    # Batch route.
    max_batch_files: int = 16  # files per POST /v1/score/batch
    max_batch_upload_mb: float = 100.0  # whole batch request

    access_log: bool = False  # uvicorn's line per request; off: /metrics counts requests by route and status
    admin_token: SecretStr | None = None  # bearer token for POST /v1/admin/reload; unset = route disabled
    reload_schemes: str = "models,runs"  # URI schemes a reload may name (besides local paths)

    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_frame_pixels, self.max_duration_s, self.max_decoded_frames, self.max_decode_s)

    @property
    def cores(self) -> int:
        return cpu_count()

    @property
    def workers(self) -> int:
        # NOTE: more threads than cores: one waiting for the GIL leaves its core to one that decodes
        return self.decode_workers or 4 * self.cores

    @property
    def threads(self) -> int:
        """onnxruntime intra-op threads: the cores when batching is forced on (one model thread runs
        every batch), else one per decode thread (each runs the model itself). Auto batching turns
        on only with a GPU provider, where these CPU threads do little: one."""
        if self.ort_threads:
            return self.ort_threads
        return self.cores if self.batching else max(1, self.cores // self.workers)

    @property
    def reload_scheme_set(self) -> set[str]:
        return {x.strip().lower() for x in self.reload_schemes.split(",") if x.strip()}

    @property
    def buckets(self) -> list[int]:
        return sorted({int(b) for b in self.batch_buckets.split(",") if b.strip()})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
