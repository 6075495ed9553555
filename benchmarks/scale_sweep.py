"""Scale sweep: does a model's skill survive the sizes creatives are delivered at?

    python benchmarks/scale_sweep.py                         # the default recipe, trained at 256 px
    python benchmarks/scale_sweep.py --train-size 256-1280   # trained on a spread of sizes
    python benchmarks/scale_sweep.py model.detail_side=0     # config overrides for the trained recipe
    python benchmarks/scale_sweep.py --quick                 # CI smoke: tiny sizes and steps

Trains one model (a recipe on synthetic creatives with the demo's annotator noise, at a fixed
short side or a spread of them), exports it through the shipped path (ONNX, preprocessing
inside) and scores the *same* test creatives rendered at several short sides (default 256,
512 and 1,080 px). They are the same designs with the same defects: blur, pixelation,
upscaling, letterbox bars and watermarks are defined relative to the creative's size, noise
and JPEG at its own pixels (DESIGN.md), so every label holds at every size. Prints per-tag AP
at each size and its fall from the smallest; a tag that falls by more than ``--max-drop``
(0.05) fails the sweep (exit status 1 with ``--check``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_bench_dir, synth_once, write_json  # noqa: E402


def size_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def test_set(work: Path, size: int, n: int, seed: int, video_frac: float) -> Path:
    """The sweep's test creatives at one short side (the same seed renders the same designs)."""
    from creative_qa.synth import SynthConfig

    cfg = SynthConfig(size=size, video_frac=video_frac)
    paths = synth_once(work / f"test-{size}", n_labeled=1, n_unlabeled=0, n_test=n, seed=seed, cfg=cfg)
    return paths["test"]


def score_ap(onnx: Path, manifest: Path) -> dict[str, float]:
    """Per-tag AP of the exported model on a labeled manifest, through the shipped scorer."""
    from creative_qa.batch import score_frame_table
    from creative_qa.manifest import label_matrix, read_manifest
    from creative_qa.scorer import Scorer
    from training.metrics import per_tag_ap

    scorer = Scorer(str(onnx))
    df = read_manifest(manifest)
    table = score_frame_table(scorer, df["abspath"].tolist(), df["path"].tolist(), progress=True)
    ok = table["error"].isna().to_numpy()
    probs = table[scorer.tags].to_numpy(dtype=np.float32)[ok]
    return per_tag_ap(probs, label_matrix(df, scorer.tags)[ok], scorer.tags)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--train-size", default="256", help="short side of the training creatives, or a range LO-HI")
    ap.add_argument("--sizes", default="256,512,1080", help="short sides the test creatives are rendered at")
    ap.add_argument("--labeled", type=int, default=400, help="noisy-labeled training creatives (as the demo)")
    ap.add_argument("--unlabeled", type=int, default=1600, help="unlabeled pool (as the demo)")
    ap.add_argument("--test", type=int, default=300, help="test creatives per size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-drop", type=float, default=0.05, help="largest AP fall allowed as the size grows")
    ap.add_argument("--check", action="store_true", help="exit 1 when a tag falls by more than --max-drop")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and one epoch (CI smoke)")
    ap.add_argument("--out", default="benchmarks/results/scale_sweep.json")
    ap.add_argument("overrides", nargs="*", help="config overrides for the trained recipe (key=value)")
    a = ap.parse_args()
    if a.quick:
        a.labeled, a.unlabeled, a.test = 48, 0, 24
        a.sizes = "64,128" if a.sizes == ap.get_default("sizes") else a.sizes
        a.train_size = "64" if a.train_size == ap.get_default("train_size") else a.train_size
        a.overrides = ["optim.epochs=1", "model.detail_side=64", *a.overrides]
    sizes = [int(s) for s in a.sizes.split(",")]
    lo, hi = size_range(a.train_size)

    from creative_qa.synth import ANNOTATOR_NOISE, SynthConfig
    from training.config import load_config
    from training.export import export_checkpoint
    from training.loop import train

    work = default_bench_dir("scale_sweep")
    video_frac = 0.0 if a.quick else 0.03
    t0 = time.time()
    train_cfg = SynthConfig(size=lo, size_max=hi if hi > lo else 0, video_frac=video_frac)
    data = synth_once(
        work / f"train-{lo}-{hi}-{a.labeled}-{a.unlabeled}",
        n_labeled=a.labeled,
        n_unlabeled=a.unlabeled,
        n_test=a.test,
        seed=a.seed,
        cfg=train_cfg,
        **ANNOTATOR_NOISE,
    )
    overrides = [f"data.labeled={data['train_labeled']}", f"data.test={data['test']}"]
    overrides += [f"data.unlabeled={data['unlabeled']}"] if a.unlabeled else []
    run = f"{a.recipe} train {a.train_size}px" + (f" {' '.join(a.overrides)}" if a.overrides else "")
    cfg = load_config(a.recipe, [*overrides, *a.overrides, "experiment=scale_sweep", f"run_name={run}"])
    print(f"training {run!r} on {a.labeled} noisy labels + {a.unlabeled} unlabeled")
    result = train(cfg)
    exp = export_checkpoint(result.checkpoint, register=False)
    t_train = time.time() - t0

    aps: dict[int, dict[str, float]] = {}
    for size in sizes:
        print(f"scoring {a.test} test creatives at {size} px")
        aps[size] = score_ap(exp.onnx_path, test_set(work, size, a.test, a.seed, video_frac))
    # NOTE: a tag without a positive at some size has no AP there: compare the tags every size has.
    tags = [t for t in aps[sizes[0]] if all(t in aps[s] for s in sizes)]
    rows: list[dict[str, Any]] = []
    for tag in tags:
        row: dict[str, Any] = {"tag": tag, **{f"ap_{s}": aps[s][tag] for s in sizes}}
        row["worst_fall"] = max(aps[sizes[0]][tag] - aps[s][tag] for s in sizes[1:]) if len(sizes) > 1 else 0.0
        rows.append(row)
    mean = {"tag": "macro mAP", **{f"ap_{s}": float(np.mean([aps[s][t] for t in tags])) for s in sizes}}
    mean["worst_fall"] = max(mean[f"ap_{sizes[0]}"] - mean[f"ap_{s}"] for s in sizes[1:]) if len(sizes) > 1 else 0.0
    failing = [r["tag"] for r in rows if r["worst_fall"] > a.max_drop]

    print()
    head = f"{'tag':<16}" + "".join(f"{f'AP {s}px':>10}" for s in sizes) + f"{'fall':>8}"
    print(head)
    for r in [*rows, mean]:
        mark = "  <- falls" if r["tag"] in failing else ""
        cells = "".join(f"{r[f'ap_{s}']:>10.3f}" for s in sizes)
        print(f"{r['tag']:<16}{cells}{r['worst_fall']:>8.3f}{mark}")
    verdict = "holds" if not failing else f"fails on {', '.join(failing)}"
    print(f"\nsweep {verdict} (largest fall allowed {a.max_drop}); trained in {t_train:.0f} s")
    info = {
        "recipe": a.recipe,
        "train_size": a.train_size,
        "overrides": a.overrides,
        "labeled": a.labeled,
        "unlabeled": a.unlabeled,
        "test": a.test,
        "sizes": sizes,
        "seed": a.seed,
        "run_id": result.run_id,
        "train_s": t_train,
    }
    out = write_json(a.out, {"info": info, "rows": rows, "mean": mean, "failing": failing})
    print(f"wrote {out}")
    if a.check and failing:
        sys.exit(1)


if __name__ == "__main__":
    main()
