"""The model as a value: an exported ONNX file's bytes and hash, and the sessions built from them.

    >>> model = load_model("models:/creative-qa@champion")   # or a local path
    >>> model.sha256[:12], len(model.data)
    >>> session = OnnxModel(model, intra_op_threads=1)

``load_model`` resolves a path or an MLflow URI once; a registry download goes to a
temporary folder that the resolver owns and removes before it returns. Everything after
that (scorers, batch engines, Ray actors, benchmark servers) holds the bytes, never a path
that something else may clean up.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnxruntime as ort

from creative_qa.paths import tracking_uri

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDERS_ENV = "CREATIVE_QA_PROVIDERS"
FIX_HINT = (
    "run `creative-qa demo` (trains and registers a demo model), register yours with "
    "`creative-qa export --checkpoint <run>/last.pt`, or pass `--model path/to/model.onnx` "
    "(serving: CREATIVE_QA_MODEL=path/to/model.onnx)"
)


class ModelNotFoundError(FileNotFoundError):
    """No model where one was asked for: the message says what is missing and how to fix it."""


def providers_from_env() -> list[str] | None:
    """``$CREATIVE_QA_PROVIDERS`` as a list (comma-separated), or None when unset."""
    env = os.environ.get(PROVIDERS_ENV)
    return [p.strip() for p in env.split(",") if p.strip()] or None if env else None


def choose_providers(requested: Sequence[str] | None = None) -> list[str]:
    """The providers to use, best first, among those this onnxruntime build offers."""
    available = ort.get_available_providers()
    wanted = list(requested) if requested else providers_from_env()
    if wanted:
        missing = [p for p in wanted if p not in available]
        if missing:
            raise ValueError(f"onnxruntime providers {missing} are not available here (available: {available})")
        return wanted
    return [p for p in PREFERRED_PROVIDERS if p in available] or available


@dataclass(frozen=True, repr=False)
class ModelBytes:
    """An exported model's bytes, where they came from, and their hash."""

    data: bytes
    source: str

    @classmethod
    def from_file(cls, path: str | Path, source: str | None = None) -> ModelBytes:
        return cls(Path(path).read_bytes(), source or str(path))

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def write(self, path: str | Path) -> Path:
        """A copy at ``path``, owned by the caller (for tools that only take a file)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(self.data)
        return p

    def __repr__(self) -> str:
        return f"ModelBytes({self.source!r}, {len(self.data)} bytes, sha256 {self.sha256[:12]})"


def _is_uri(s: str) -> bool:
    return "://" in s or ":/" in s


def load_model(uri: str | Path | ModelBytes) -> ModelBytes:
    """The model at a local path, or at ``models:/name@alias`` / ``runs:/...`` through MLflow.

    Raises ``ModelNotFoundError`` naming what is missing and the command that fixes it.
    """
    if isinstance(uri, ModelBytes):
        return uri
    s = str(uri)
    if not _is_uri(s):
        p = Path(s).expanduser()
        if p.is_dir():
            onnx = sorted(str(f.relative_to(p)) for f in p.rglob("*.onnx"))[:3]
            raise ModelNotFoundError(f"{p} is a folder: name the .onnx file (it holds {onnx or 'none'}); {FIX_HINT}")
        if not p.is_file():
            raise ModelNotFoundError(f"model file not found: {p}; {FIX_HINT}")
        return ModelBytes.from_file(p, s)
    try:
        from mlflow.exceptions import MlflowException

        import mlflow  # only for registry URIs; mlflow-skinny is enough
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError(f"{s} is an MLflow URI: install mlflow-skinny (pip install 'creative-qa[serve]')") from e
    store = tracking_uri()
    if s.startswith("models:/") and store.startswith("sqlite:///") and not Path(store[len("sqlite:///") :]).is_file():
        # NOTE: a fresh machine: say so instead of creating an empty store just to find nothing in it.
        raise ModelNotFoundError(f"no model at {s}: nothing is registered yet (no MLflow store at {store}); {FIX_HINT}")
    mlflow.set_tracking_uri(store)
    # NOTE: the registry too: a process that used another store before (a test, a benchmark) still points at it.
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or store)
    # NOTE: the download folder is this function's own, gone when it returns (or raises).
    with tempfile.TemporaryDirectory(prefix="creative-qa-model-") as dst:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=s, dst_path=dst))
        except MlflowException as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelNotFoundError(f"no model at {s} in the MLflow store {store} ({first}); {FIX_HINT}") from e
        files = [local] if local.is_file() else sorted(local.rglob("*.onnx"))
        if not files:
            raise ModelNotFoundError(f"{s} holds no .onnx file; {FIX_HINT}")
        return ModelBytes.from_file(files[0], s)


class OnnxModel:
    """A session over a model's bytes: uint8 views in, ``(quality, tags)`` probabilities out."""

    def __init__(
        self,
        model: ModelBytes | str | Path,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
    ):
        self.model = model if isinstance(model, ModelBytes) else ModelBytes.from_file(model)
        self.session = self._session(choose_providers(providers), intra_op_threads)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    def _session(self, providers: list[str], intra_op_threads: int | None) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            # NOTE: a server or batch run shares the cores with its decoders: a fixed thread count, one
            # inter-op thread and no spin-waiting keep onnxruntime from oversubscribing them.
            opts.intra_op_num_threads = max(1, intra_op_threads)
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(self.model.data, sess_options=opts, providers=providers)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def set_cpu_threads(self, threads: int) -> None:
        """Rebuild a CPU-only session with ``threads`` intra-op threads and no spinning (GPU sessions stay)."""
        if self.providers == ["CPUExecutionProvider"]:
            self.session = self._session(["CPUExecutionProvider"], max(1, threads))

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        quality, tags = self.session.run(["quality", "tags"], {"images": images})
        return quality.astype(np.float32), tags.astype(np.float32)


__all__ = [
    "FIX_HINT",
    "ModelBytes",
    "ModelNotFoundError",
    "OnnxModel",
    "choose_providers",
    "load_model",
    "providers_from_env",
]
