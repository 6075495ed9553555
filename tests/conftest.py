"""Shared fixtures: a tiny synthetic data set and a tiny exported model, built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Keep every test's MLflow store and demo data out of the user's home.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    # NOTE: one home for the whole session; a test that depends on what the store holds takes ``fresh_home``.
    monkeypatch.setenv("CREATIVE_QA_HOME", str(tmp_path_factory.getbasetemp() / "cqa-home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # NOTE: mlflow.set_registry_uri also exports MLFLOW_REGISTRY_URI, which would leak a finished test's server.
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    # ... and both URIs are process globals too: a registry lookup would read the last test's store.
    for module, name in (
        ("mlflow.tracking._tracking_service.utils", "_tracking_uri"),
        ("mlflow.tracking._model_registry.utils", "_registry_uri"),
    ):
        if module in sys.modules:  # not imported yet: nothing was set
            monkeypatch.setattr(sys.modules[module], name, None)


@pytest.fixture
def fresh_home(_isolated_home, tmp_path_factory, monkeypatch) -> Path:
    """A home of the test's own: an empty MLflow store and registry, whatever ran before.

    The shared home (one per session, for speed: the store's migrations run once, the view cache
    is reused) suits a test that looks only at what it made itself; a test that counts runs or
    versions, reads an alias, or needs the store absent takes this one.
    """
    home = tmp_path_factory.mktemp("cqa-home")  # not under tmp_path: the test's own folder stays its own
    monkeypatch.setenv("CREATIVE_QA_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    from creative_qa.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(size=128, video_frac=0.08, video_seconds=1.0, video_fps=4)
    return generate_dataset(out, n_labeled=48, n_unlabeled=8, n_test=16, seed=3, cfg=cfg, workers=1, progress=False)


TINY_OVERRIDES = [
    "model.backbone=test_resnet",
    "model.input_size=64",
    "model.crops=2",
    "model.detail_side=128",
    "optim.batch_size=16",
    "optim.epochs=1",
    "optim.warmup_steps=2",
]


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_data) -> Path:
    """An untrained tiny model exported through the real export path (no registry)."""
    import torch

    from creative_qa.taxonomy import load_taxonomy
    from training.checkpoint import Checkpoint
    from training.config import load_config
    from training.export import export_onnx
    from training.loop import spec_of
    from training.model import build_model

    cfg = load_config("default", TINY_OVERRIDES)
    tax = load_taxonomy()
    torch.manual_seed(0)
    model = build_model(cfg.model, len(tax))
    spec = spec_of(cfg)
    ckpt = Checkpoint.for_model(model, cfg, tax, spec, run_id="test")
    return export_onnx(ckpt, tmp_path_factory.mktemp("onnx") / "tiny.onnx", version="7", name="tiny")


WEAK_TAGS = ("watermark", "has_logo", "underexposed")  # unreliable in ``tiny_onnx_weak``'s flag policy


@pytest.fixture(scope="session")
def tiny_onnx_weak(tmp_path_factory) -> Path:
    """``tiny_onnx`` with a calibrated flag policy: every tag's threshold near 0 (so a reliable tag is
    always flagged), and ``WEAK_TAGS`` unreliable (so never flagged)."""
    import torch

    from creative_qa.flags import FlagPolicy, TagFlag
    from creative_qa.taxonomy import load_taxonomy
    from training.checkpoint import Checkpoint
    from training.config import load_config
    from training.export import export_onnx
    from training.loop import spec_of
    from training.model import build_model

    cfg = load_config("default", TINY_OVERRIDES)
    tax = load_taxonomy()
    assert set(WEAK_TAGS) <= set(tax.tag_names)  # names of the taxonomy's tags, not made up here
    torch.manual_seed(0)
    ckpt = Checkpoint.for_model(build_model(cfg.model, len(tax)), cfg, tax, spec_of(cfg), run_id="test")
    tags = {
        t: TagFlag(1e-4, t not in WEAK_TAGS, "does not rank above its prior" if t in WEAK_TAGS else "ok", 0.5, 0.1, 0.1)
        for t in tax.tag_names
    }
    policy = FlagPolicy(0.8, 0.3, 0.05, "estimated", tags)
    ckpt.thresholds, ckpt.flags = policy.thresholds, policy.to_dict()
    return export_onnx(ckpt, tmp_path_factory.mktemp("onnx") / "tiny-weak.onnx", version="7", name="tiny")
