"""Annotator rates, true against estimated, per tag, in the cells of the regime grid.

    python benchmarks/annotator_rates.py                    # the grid's stored floor runs, every cell and seed
    python benchmarks/annotator_rates.py --arm default      # another arm's runs
    python benchmarks/annotator_rates.py --grid-dir DIR     # a grid kept elsewhere (learning.py --data)

The flag calibration (``training.flags``) estimates how often the annotators miss a positive and mark a
negative from the validation labels alone: each tag's anchors (its surest creatives, and those ranked far
below its positives) and one shared rate over the tags the model ranks. The grid knows the truth: each cell's
noisy manifest was made from clean labels with known rates (``learning.NOISE``). For each stored run of
``learning.py --grid`` (``--arm``, default the floor) this rebuilds the run's validation split (the same
``split_val`` of the cell's noisy manifest with the run's seed), predicts it with the run's checkpoint, and
prints per tag: the true rates on that split (clean positives left at 0, clean negatives marked 1; blanks left
out), the tag's anchor estimates and how many anchors they rest on, then the shared estimate the flag policy
uses. Writes ``benchmarks/results/annotator_rates.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_bench_dir, print_table, write_json  # noqa: E402

GRID_DIR = "learning-grid-L2000-U1600-T500-H300-s0"  # learning.py --grid's default data folder


def stored_runs(grid_dir: Path, arm: str) -> list[tuple[str, int, Path, dict[str, Any]]]:
    """``(cell, seed, checkpoint, stored row)`` of each stored run of ``arm`` whose checkpoint is still there (newest
    per seed)."""
    runs: dict[tuple[str, int], tuple[float, Path, dict[str, Any]]] = {}
    for path in sorted((grid_dir / "results").glob(f"*/{arm}-s*.json")):
        row = json.loads(path.read_text())
        ckpt = Path(row.get("checkpoint", ""))
        seed = int(path.name[len(arm) + 2 :].split("-")[0])
        key = (path.parent.name, seed)
        if ckpt.is_file() and path.stat().st_mtime >= runs.get(key, (-1.0,))[0]:
            runs[key] = (path.stat().st_mtime, ckpt, row)
    return [(cell, seed, ckpt, row) for (cell, seed), (_, ckpt, row) in sorted(runs.items())]


def true_rates(noisy: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per tag: the share of clean positives labelled 0 and of clean negatives labelled 1 (blanks left out)."""
    known = ~np.isnan(noisy)
    pos, neg = known & (clean == 1), known & (clean == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        miss = ((noisy == 0) & pos).sum(0) / pos.sum(0)
        fp = ((noisy == 1) & neg).sum(0) / neg.sum(0)
    return miss, fp


def validation_predictions(ckpt_path: Path, cell: str):
    """A stored run's validation split (its labeled manifest, ``val_frac`` and seed, as ``split_val`` made it)
    predicted by its checkpoint: ``(checkpoint, config, tags, split, probabilities)``."""
    import torch

    from creative_qa.preprocess import PreprocessSpec
    from training.checkpoint import Checkpoint
    from training.data import load_manifest_dataset
    from training.loop import cache_root, predict, split_val
    from training.model import config_of, model_from_checkpoint

    ckpt = Checkpoint.load(ckpt_path)
    cfg = config_of(ckpt)
    tags = [t["name"] for t in ckpt.taxonomy["tags"]]
    spec = PreprocessSpec.from_dict(ckpt.preprocess)
    ds, _ = load_manifest_dataset(cfg.data.labeled, tags, spec, desc=f"{cell} labeled", cache=cache_root(cfg))
    _, val = split_val(ds, cfg.data.val_frac, cfg.seed)
    probs, _ = predict(model_from_checkpoint(ckpt), val, torch.device("cpu"))
    return ckpt, cfg, tags, val, probs


def measure(ckpt_path: Path, grid_dir: Path, cell: str) -> dict[str, Any]:
    """One run: its validation split's true and estimated rates, per tag and shared."""
    from creative_qa.manifest import label_matrix, read_manifest
    from training.flags import calibrate_flags, tag_anchors

    ckpt, cfg, tags, val, probs = validation_predictions(ckpt_path, cell)
    clean_df = read_manifest(grid_dir / f"cell-{cell}-train_labeled_clean.csv")
    by_path = dict(zip(clean_df["abspath"].astype(str), range(len(clean_df)), strict=True))
    clean = label_matrix(clean_df, tags)[[by_path[str(p)] for p in val.paths]]
    noisy = val.labels.numpy()
    miss_true, fp_true = true_rates(noisy, clean)
    rows = []
    for j, tag in enumerate(tags):
        a = tag_anchors(probs, noisy, j)
        rows.append({
            "tag": tag, "miss_true": float(miss_true[j]), "miss_est": a.miss if a else float("nan"),
            "pos_anchors": a.pos_n if a else 0, "fp_true": float(fp_true[j]), "fp_est": a.fp if a else float("nan"),
        })  # fmt: skip
    policy = calibrate_flags(probs, noisy, tags, {}, seed=cfg.seed)
    pooled_miss, pooled_fp = (float(r[0]) for r in true_rates(noisy.reshape(-1, 1), clean.reshape(-1, 1)))
    return {
        "run_id": ckpt.run_id,
        "n_val": len(val),
        "tags": rows,
        "shared": {
            "miss_true": pooled_miss,
            "miss_est": policy.miss_rate,
            "fp_true": pooled_fp,
            "fp_est": policy.fp_rate,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--grid-dir", type=Path, default=None, help=f"the grid's data folder (default: <home>/bench/{GRID_DIR})"
    )
    ap.add_argument("--arm", default="floor", help="whose stored runs predict the validation splits")
    ap.add_argument("--out", default="benchmarks/results/annotator_rates.json")
    a = ap.parse_args()
    grid_dir = a.grid_dir or default_bench_dir(GRID_DIR)
    runs = stored_runs(grid_dir, a.arm)
    if not runs:
        raise SystemExit(
            f"no stored {a.arm} runs with their checkpoints under {grid_dir}/results (run learning.py --grid)"
        )
    from learning import NOISE

    result: dict[str, Any] = {"arm": a.arm, "cells": {}}
    for cell, seed, ckpt, _ in runs:
        m = measure(ckpt, grid_dir, cell)
        result["cells"].setdefault(cell, {})[str(seed)] = m
        nominal = NOISE[cell.split("-", 1)[1]]
        print(f"\n{cell}, seed {seed}: {m['n_val']} validation creatives; the cell's annotators miss "
              f"{nominal['miss_rate']:.0%} of positives and mark {nominal['fp_rate']:.0%} of negatives")  # fmt: skip
        print_table(m["tags"], ["tag", "miss_true", "miss_est", "pos_anchors", "fp_true", "fp_est"])
        s = m["shared"]
        print(f"shared (the flag policy's): miss {s['miss_true']:.3f} true, {s['miss_est']:.3f} estimated; "
              f"false positives {s['fp_true']:.3f} true, {s['fp_est']:.3f} estimated")  # fmt: skip
    summary = []
    for cell, seeds in result["cells"].items():
        shared = [m["shared"] for m in seeds.values()]

        def span(key: str, shared: list[dict[str, float]] = shared) -> str:
            v = [s[key] for s in shared]
            return f"{np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})"

        summary.append({"cell": cell, "seeds": len(shared), "validation": seeds[next(iter(seeds))]["n_val"],
                        "miss_true": span("miss_true"), "miss_est": span("miss_est"),
                        "fp_true": span("fp_true"), "fp_est": span("fp_est")})  # fmt: skip
    print("\nshared rates over seeds, mean (range): true on each validation split against the flag policy's estimate")
    print_table(summary, ["cell", "seeds", "validation", "miss_true", "miss_est", "fp_true", "fp_est"])
    result["summary"] = summary
    write_json(a.out, result)


if __name__ == "__main__":
    main()
