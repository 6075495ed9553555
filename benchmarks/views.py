"""What the model sees: whole view only vs whole view + native-scale detail crops, same backbone and budget.

    python benchmarks/views.py            # ~10 min on 2 CPU cores
    python benchmarks/views.py --quick    # smoke size

Arms: the whole creative at S px (no crops); the whole creative at a larger size with
about the same pixel count as the S px views together; the whole creative plus detail
crops at fixed positions; and the default, detail crops placed where the edges are.
Prints macro mAP, the mAP of the fine-detail tags (blurry, low_resolution,
jpeg_artifacts, noisy, pixelated) and writes JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_bench_dir, print_table, run_arm, synth_once, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labeled", type=int, default=1500)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/views.json")
    a = ap.parse_args()
    if a.quick:
        a.labeled, a.test, a.epochs = 64, 24, 1
    from training.config import load_config

    cfg = load_config(a.recipe)
    s = cfg.model.input_size
    big = int(math.ceil(s * math.sqrt(1 + cfg.model.crops) / 8) * 8)
    data = synth_once(
        default_bench_dir(f"views-{a.labeled}"),
        n_labeled=a.labeled,
        n_unlabeled=0,
        n_test=a.test,
        seed=0,
        progress=False,
    )
    base = [f"data.labeled={data['train_labeled']}", f"data.test={data['test']}"]
    if a.epochs:
        base.append(f"optim.epochs={a.epochs}")
    arms = [
        (f"whole {s}px", [*base, "model.crops=0"]),
        (f"whole {big}px", [*base, "model.crops=0", f"model.input_size={big}", f"model.detail_side={max(big, 256)}"]),
        (f"whole {s}px + {cfg.model.crops} fixed crops", [*base, "model.crop_policy=fixed"]),
        (f"whole {s}px + {cfg.model.crops} edge crops", [*base, "model.crop_policy=detail"]),
    ]
    rows = [run_arm(name, a.recipe, ov, "bench-views") for name, ov in arms]
    print_table(rows, ["arm", "test_mAP", "test_detail_mAP", "test_quality_spearman", "wall_s"])
    print(write_json(a.out, {"recipe": a.recipe, "labeled": a.labeled, "rows": rows}))


if __name__ == "__main__":
    main()
