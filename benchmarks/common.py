"""Helpers shared by the learning benchmarks: data once, one training arm per call, a table and JSON out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from creative_qa.paths import home

DETAIL_TAGS = ("blurry", "low_resolution", "jpeg_artifacts", "noisy", "pixelated")


def made_once(marker: Path, make: Callable[[], Any], outputs: tuple[Path, ...] = (), **key: Any) -> Any:
    """``make()``'s result, unless ``marker`` records the same ``key`` made by this generator and every one
    of ``outputs`` is there (then None: what it made is there). A cache keyed on its arguments alone
    would keep an older generator's data."""
    from creative_qa.synth import SYNTH_VERSION

    text = json.dumps(key | {"synth_version": SYNTH_VERSION}, sort_keys=True, default=str)
    if marker.is_file() and marker.read_text() == text and all(p.is_file() for p in outputs):
        return None
    made = make()
    marker.write_text(text)
    return made


def synth_once(out: Path, **kwargs: Any) -> dict[str, Path]:
    """Generate a benchmark data set unless the same one is already there."""
    from creative_qa.synth import generate_dataset

    paths = made_once(out / "bench.json", lambda: generate_dataset(out, **kwargs), **kwargs)
    return paths if paths is not None else {p.stem: p for p in out.glob("*.csv")}


def run_arm(name: str, recipe: str, overrides: list[str], experiment: str) -> dict[str, Any]:
    """Train one arm; returns its test metrics and wall time."""
    from training.config import load_config
    from training.loop import train

    cfg = load_config(recipe, [*overrides, f"experiment={experiment}", f"run_name={name}"])
    t = time.time()
    result = train(cfg)
    m = result.metrics
    detail = [m[f"test_AP_{t}"] for t in DETAIL_TAGS if f"test_AP_{t}" in m]
    return {
        "arm": name,
        "run_id": result.run_id,
        "checkpoint": str(result.checkpoint),
        "test_mAP": m.get("test_mAP"),
        "test_detail_mAP": sum(detail) / len(detail) if detail else None,
        "test_quality_spearman": m.get("test_quality_spearman"),
        "per_tag_AP": {k[len("test_AP_") :]: v for k, v in m.items() if k.startswith("test_AP_")},
        "wall_s": time.time() - t,
    }


def print_table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    widths = [
        max(
            [len(c), 8] + [len(f"{r.get(c):.3f}" if isinstance(r.get(c), float) else str(r.get(c) or "")) for r in rows]
        )
        for c in cols
    ]
    print("  ".join(f"{c:<{w}}" for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        cells = []
        for c, w in zip(cols, widths, strict=True):
            v = r.get(c)
            cells.append(f"{v:<{w}.3f}" if isinstance(v, float) else f"{v or '':<{w}}")
        print("  ".join(cells))


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(payload, indent=2, default=str))
    return p


def default_bench_dir(name: str) -> Path:
    return home() / "bench" / name


def export_random_model(recipe: str, out: Path, version: str, name: str) -> Path:
    """The recipe's architecture with random weights (seed 0), exported through the real export path:
    a model for speed benchmarks, which need its shape, not its skill."""
    import torch

    from creative_qa.taxonomy import load_taxonomy
    from training.checkpoint import Checkpoint
    from training.config import load_config
    from training.export import export_onnx
    from training.loop import spec_of
    from training.model import build_model

    cfg = load_config(recipe)
    tax = load_taxonomy()
    torch.manual_seed(0)
    model = build_model(cfg.model, len(tax))
    return export_onnx(Checkpoint.for_model(model, cfg, tax, spec_of(cfg), run_id="bench"), out, version, name)
