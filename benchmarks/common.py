"""Helpers shared by the learning benchmarks: data once, one training arm per call, a table and JSON out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from creative_qa.paths import home


def _detail_tags() -> tuple[str, ...]:
    """The defects whose evidence is fine pixel detail (``Defect.fine_detail``): the "detail mAP" tags."""
    from creative_qa.synth.defects import DEFECTS

    return tuple(name for name, d in DEFECTS.items() if d.fine_detail)


DETAIL_TAGS = _detail_tags()


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


def export_random_model(recipe: str, out: Path, version: str, name: str, overrides: tuple[str, ...] = ()) -> Path:
    """The recipe's architecture (with config ``overrides``) with random weights (seed 0), exported through
    the real export path: a model for speed benchmarks, which need its shape, not its skill."""
    import torch

    from creative_qa.taxonomy import load_taxonomy
    from training.checkpoint import Checkpoint
    from training.config import load_config
    from training.export import export_onnx
    from training.loop import spec_of
    from training.model import build_model

    cfg = load_config(recipe, list(overrides))
    tax = load_taxonomy()
    torch.manual_seed(0)
    model = build_model(cfg.model, len(tax))
    return export_onnx(Checkpoint.for_model(model, cfg, tax, spec_of(cfg), run_id="bench"), out, version, name)


# --------------------------------------------------------------------------- the real-photo benchmark's split
# Short-side bins the real-photo creatives are reported in (benchmarks/realphoto.py makes 320-1,080 px).
REALPHOTO_BINS = ((320, 540), (540, 800), (800, 1080))


def realphoto_n(value: int | None, quick: bool) -> int:
    """``--realphoto-n`` resolved: 1000 by default, 24 with ``--quick``; 0 turns the split off."""
    return value if value is not None else (24 if quick else 1000)


def realphoto_set(n: int, quick: bool, seed: int = 0) -> Path:
    """The real-photo benchmark's manifest (``benchmarks/realphoto.py``), built once under the project home and
    shared by the scripts that report it. ``quick`` allows the builder's fallback photos and fonts (CI);
    otherwise missing photo packages stop the run with the builder's hint (``make bench-data``)."""
    import realphoto

    folder = default_bench_dir("realphoto") / (f"n{n}-s{seed}" + ("-quick" if quick else ""))
    try:
        return realphoto.build(folder, n=n, seed=seed, allow_fallback=quick, progress=False)
    except realphoto.MissingAssets as e:
        raise SystemExit(f"real-photo split: {e} (or pass --realphoto-n 0 to leave it out)") from e


def short_side_bin(short: int) -> str | None:
    """The ``REALPHOTO_BINS`` label ("320-540") a short side falls in (the last bin includes its top)."""
    for k, (lo, hi) in enumerate(REALPHOTO_BINS):
        if lo <= short < hi or (k == len(REALPHOTO_BINS) - 1 and short == hi):
            return f"{lo}-{hi}"
    return None


def realphoto_report(probs: Any, labels: Any, tags: list[str], short_sides: Any) -> dict[str, Any]:
    """Per-tag AP on the real-photo creatives scored (rows of NaN probabilities are left out), overall and per
    short-side bin, with the creatives counted: ``{"n", "ap", "mAP", "bins": {label: {"n", "ap", "mAP"}}}``.
    A tag without both a positive and a negative in a subset has no AP there."""
    import numpy as np

    from training.metrics import macro_map, per_tag_ap

    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    ok = ~np.isnan(probs).any(axis=1)
    sides = np.asarray(short_sides)

    def one(mask: Any) -> dict[str, Any]:
        ap = per_tag_ap(probs[mask], labels[mask], tags) if mask.any() else {}
        return {"n": int(mask.sum()), "ap": ap, "mAP": macro_map(ap) if ap else None}

    out = one(ok)
    labels_of_bins = np.array([short_side_bin(int(s)) for s in sides], dtype=object)
    out["bins"] = {f"{lo}-{hi}": one(ok & (labels_of_bins == f"{lo}-{hi}")) for lo, hi in REALPHOTO_BINS}
    return out


# --------------------------------------------------------------------------- flags
def flag_policy_of(ckpt: Any) -> Any:
    """A checkpoint's ``FlagPolicy`` (one without a calibrated policy: every tag at its threshold)."""
    from creative_qa.flags import FlagPolicy

    return FlagPolicy.from_dict(ckpt.flags) if ckpt.flags else FlagPolicy.from_thresholds(ckpt.thresholds or {})


def flag_stats(probs: Any, labels: Any, tags: list[str], policy: Any) -> dict[str, dict[str, float]]:
    """Per tag, under the model's flag ``policy`` (over known labels): reliable (1 or 0), its threshold, the
    share of creatives flagged (0 for an unreliable tag: never flagged), the true share, and the precision and
    recall of the flags (NaN where nothing is flagged, or nothing is positive)."""
    import numpy as np
    from sklearn.metrics import precision_score, recall_score

    out: dict[str, dict[str, float]] = {}
    for j, t in enumerate(tags):
        known = ~np.isnan(labels[:, j])
        f = policy.tags.get(t)
        if not known.any() or f is None:
            continue
        y = labels[known, j] == 1
        flag = (probs[known, j] >= f.threshold) & f.reliable
        out[t] = {
            "reliable": float(f.reliable),
            "threshold": float(f.threshold),
            "flagged": float(flag.mean()),
            "true": float(y.mean()),
            "precision": float(precision_score(y, flag, zero_division=np.nan)),
            "recall": float(recall_score(y, flag, zero_division=np.nan)),
        }
    return out
