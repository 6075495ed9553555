"""Which labels to add: ``creative-qa label-next`` against random picks, from the regime grid's labeled start.

    python benchmarks/active.py                    # 3 seeds, clean answers: about 40 minutes on 2 CPU cores
    python benchmarks/active.py --annotator noisy  # ... the answers with the cell's annotator noise
    python benchmarks/active.py --first-seed 3     # seeds 3-5: confirm on seeds no choice was made on
    python benchmarks/active.py --quick            # smoke size

Per seed: the start model is trained on the grid cell's labels (``--cell``, the heavy 400-label cell by
default: its noisy labels); ``label-next`` (``creative_qa.active``, through the exported start model, as a
team runs it) chooses ``--add`` creatives from the grid's unlabeled pool, and ``random`` draws as many (and
``random_x2`` twice as many) from the same pool with the seed. Each chosen creative is answered by the
"annotator": its clean labels (``--annotator clean``: the comparison is about the selection alone) or its
clean labels through the cell's annotator noise (``noisy``). Every arm then trains the same recipe
(``--recipe``, the floor's supervised training by default), budget and seed on the start labels plus its
additions, and is scored on test, foreign and the real-photo benchmark (macro mAP and the per-tag AP of the
rarest tags). The paired 95 % interval (seeds paired, creatives resampled) is each arm minus ``random``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_bench_dir, print_table, write_json  # noqa: E402

ARMS = ("label_next", "random", "random_x2")
SPLITS = ("test", "foreign", "realphoto")


def chosen_by_label_next(checkpoint: str, pool: Path, labeled: Path, n: int, work: Path) -> list[str]:
    """The pool paths ``label-next`` chooses with the start model (exported to ONNX first, as a team would)."""
    from creative_qa.active import label_next
    from creative_qa.scorer import Scorer
    from training.checkpoint import Checkpoint
    from training.export import export_onnx

    onnx = export_onnx(Checkpoint.load(checkpoint), work / "start.onnx", version="0", name="start")
    sel = label_next(Scorer(onnx), pool, labeled, n, work / "scores", workers=0, progress=False, overwrite=True)
    return list(sel.chosen["path"].astype(str))


def answered(clean_pool: pd.DataFrame, paths: list[str], tags: list[str], noisy: bool, rates: dict, seed: int):
    """The chosen creatives' labels as the annotator gives them: clean, or through the cell's noise."""
    from creative_qa.synth import add_annotator_noise

    rows = clean_pool.set_index("path").loc[paths].reset_index()
    if not noisy:
        return rows
    return add_annotator_noise(rows, tags, np.random.default_rng([seed, 7]), quality_noise=0.05, **rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", default="n400-heavy", help="the grid cell whose labels are the start")
    ap.add_argument("--add", type=int, default=200, help="labels each arm adds (random_x2: twice as many)")
    ap.add_argument("--annotator", choices=("clean", "noisy"), default="clean")
    ap.add_argument("--recipe", default="floor", help="floor (supervised on the labels) or a recipe name")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run from here (a confirmation on fresh seeds)")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="JSON results (benchmarks/results/active-<annotator>.json)")
    a = ap.parse_args()
    import learning
    import realphoto

    from creative_qa.taxonomy import load_taxonomy
    from training.config import load_config
    from training.loop import cache_root
    from training.metrics import macro_map, per_tag_ap

    t0 = time.time()
    tags = load_taxonomy().tag_names
    cell = learning.Cell.parse("n40-heavy" if a.quick else a.cell)
    arms = [x for x in a.arms.split(",") if x]
    if set(arms) - set(ARMS):
        raise SystemExit(f"unknown arms {sorted(set(arms) - set(ARMS))}; choose from {', '.join(ARMS)}")
    pool_n, test, heldout = (40, 40, 30) if a.quick else (learning.GRID_POOL, 500, 300)
    n_base = 80 if a.quick else 2000
    epochs, steps = (2, 3) if a.quick else (20, 25)
    add = 10 if a.quick else a.add
    seeds = 1 if a.quick else a.seeds
    bench = default_bench_dir(f"learning-grid-L{n_base}-U{pool_n}-T{test}-H{heldout}-s0")
    base = learning.make_grid_base(bench, n_base, pool_n, test, heldout, 0)
    rp_n = 24 if a.quick else 1000
    base["realphoto"] = realphoto.build(bench / f"realphoto-{rp_n}", n=rp_n, seed=0, allow_fallback=a.quick)
    data = learning.cell_data(base, cell, tags, 0)
    evaluator = learning.Evaluator(data, tags, cell.rates, SPLITS, {}, cache_root(load_config("default")), True)
    clean_pool = pd.read_csv(base["unlabeled_clean"])
    start = pd.read_csv(data["train_labeled"])
    common = [f"optim.epochs={epochs}", f"optim.steps_per_epoch={steps}", "data.test=null"]
    common += ["model.detail_side=128"] if a.quick else []
    if a.recipe == "floor":
        recipe, extra = "default", ["method.name=supervised", "method.params={}"]
    else:
        recipe, extra = a.recipe, [f"data.unlabeled={base['unlabeled']}"]
    work = bench / f"active-{cell.name}-{a.annotator}"
    work.mkdir(parents=True, exist_ok=True)

    def fit(name: str, labeled: Path, seed: int) -> dict[str, Any]:
        """Train the arm's recipe on ``labeled`` and score it (``learning.run_arm``); its row named by arm."""
        overrides = [*common, *extra, f"data.labeled={labeled}", f"seed={seed}"]
        return learning.run_arm(name, recipe, overrides, "bench-active", evaluator) | {"arm": name.split("-s")[0]}

    rows: list[dict[str, Any]] = []
    for seed in range(a.first_seed, a.first_seed + seeds):
        print(f"--- seed {seed}: the start model on {len(start)} labels", flush=True)
        first = fit(f"start-s{seed}", data["train_labeled"], seed)
        rows.append(first)
        labeled = set(start["path"].astype(str))
        candidates = [p for p in clean_pool["path"].astype(str) if p not in labeled]
        for arm in arms:
            if arm == "label_next":
                paths = chosen_by_label_next(first["checkpoint"], base["unlabeled"], data["train_labeled"], add,
                                             work / f"s{seed}")  # fmt: skip
            else:  # the same draw for both: random_x2's first half is random's
                k = add * (2 if arm == "random_x2" else 1)
                paths = list(np.random.default_rng([seed, 1]).permutation(candidates)[:k])
            added = answered(clean_pool, paths, tags, a.annotator == "noisy", cell.rates, seed)
            manifest = bench / f"active-{cell.name}-{a.annotator}-{arm}-s{seed}.csv"
            learning._write_labels(pd.concat([start, added], ignore_index=True), manifest, tags)
            print(f"--- seed {seed}: {arm}, {len(paths)} labels added", flush=True)
            row = fit(f"{arm}-s{seed}", manifest, seed)
            row["added_positives"] = {t: int(np.nansum(added[t])) for t in tags}
            rows.append(row)
            print("    " + ", ".join(f"{s} {row[f'{s}_mAP']:.3f}" for s in SPLITS), flush=True)

    rare = sorted(tags, key=lambda t: pd.to_numeric(start[t], errors="coerce").mean())[:4]
    labels = rows[0]["labels"]
    table, intervals = [], {}
    for arm in ["start", *arms]:
        rs = [r for r in rows if r["arm"] == arm]
        row = {"arm": arm, "seeds": len(rs)}
        for s in SPLITS:
            row[s] = f"{np.mean([r[f'{s}_mAP'] for r in rs]):.3f} ± {np.std([r[f'{s}_mAP'] for r in rs]):.3f}"
        for t in rare:
            row[f"test AP {t}"] = round(float(np.mean([r["test_per_tag_AP"][t] for r in rs])), 3)
        if arm != "start":
            row["added positives (rare)"] = int(np.mean([sum(r["added_positives"][t] for t in rare) for r in rs]))
        table.append(row)
        if arm not in ("start", "random") and "random" in arms:
            base_rs = [r for r in rows if r["arm"] == "random"]
            intervals[arm] = {}
            for s in SPLITS:
                lo, hi = learning.paired_bootstrap([r["probs"][s] for r in rs], [r["probs"][s] for r in base_rs],
                                                   labels[s], n=a.bootstrap)  # fmt: skip
                mean = [
                    np.mean([macro_map(per_tag_ap(r["probs"][s], labels[s], tags)) for r in x]) for x in (rs, base_rs)
                ]
                diff = float(mean[0] - mean[1])
                intervals[arm][s] = {"diff": diff, "ci95": [lo, hi]}
    print_table(table, list(table[0].keys()) + ["added positives (rare)"])
    for arm, iv in intervals.items():
        said = [f"{s} {v['diff']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]" for s, v in iv.items()]
        print(f"{arm} - random (paired 95 % interval): " + "; ".join(said))
    for r in rows:
        r.pop("probs", None), r.pop("labels", None)
    out = a.out or f"benchmarks/results/active-{a.annotator}.json"
    write_json(out, {"args": vars(a), "rows": rows, "table": table, "intervals": intervals, "rare_tags": rare,
                     "wall_s": time.time() - t0})  # fmt: skip
    print(f"wrote {out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
