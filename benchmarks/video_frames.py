"""Videos: training on the middle frame vs on every sampled frame (multiple-instance labels).

    python benchmarks/video_frames.py            # ~15 min on 2 busy CPU cores
    python benchmarks/video_frames.py --quick    # smoke size

The synthetic videos (``creative_qa.synth.generate.make_video``) show some of their
defects only in the second half of the clip; a video's label says "anywhere in it".
Both arms train the same recipe for the same steps on the same videos; one sees each
video's middle frame, the other up to 8 frames sampled as the scorer samples them, its
tags pooled over frames (max: the scorer's aggregation). Each model is exported to
ONNX and scores the test videos through ``creative_qa.Scorer`` (mean quality, max tag
probability over frames), so the per-tag AP is what serving would get.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_bench_dir, print_table, synth_once, write_json  # noqa: E402


def score_videos(checkpoint: Path, manifest: Path) -> dict[str, Any]:
    import numpy as np

    from creative_qa.manifest import label_matrix, read_manifest
    from creative_qa.scorer import Scorer
    from training.checkpoint import Checkpoint
    from training.export import export_onnx
    from training.metrics import macro_map, per_tag_ap

    with tempfile.TemporaryDirectory(prefix="cqa-bench-") as tmp:  # the session holds the model once loaded
        scorer = Scorer(export_onnx(Checkpoint.load(checkpoint), Path(tmp) / "m.onnx", version="0", name="bench"))
    df = read_manifest(str(manifest))
    probs = np.array([[r["tags"][t] for t in scorer.tags] for r in map(scorer.score_file, df["abspath"])])
    ap = per_tag_ap(probs, label_matrix(df, scorer.tags), scorer.tags)
    return {"video_mAP": macro_map(ap), "per_tag_AP": ap}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labeled", type=int, default=120)
    ap.add_argument("--test", type=int, default=80)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--method", default="supervised", help="the learning method both arms use")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/video_frames.json")
    a = ap.parse_args()
    if a.quick:
        a.labeled, a.test, a.epochs = 24, 12, 1
    from creative_qa.synth import SynthConfig
    from training.config import load_config
    from training.loop import train

    bench = default_bench_dir(f"video-frames-{a.labeled}")
    cfg = SynthConfig(size=160, video_frac=1.0, video_seconds=2.0, video_fps=6)
    data = synth_once(bench, n_labeled=a.labeled, n_unlabeled=0, n_test=a.test, seed=0, cfg=cfg, progress=False)
    base = [
        f"data.labeled={data['train_labeled']}",
        f"optim.epochs={a.epochs}",
        f"optim.batch_size={a.batch_size}",
        f"method.name={a.method}",
        "experiment=bench-video-frames",
    ] + (["model.crops=2", "optim.steps_per_epoch=2"] if a.quick else [])
    rows = []
    for name, frames in (("middle frame", 1), ("every sampled frame (max)", 8)):
        t0 = time.time()
        result = train(load_config(a.recipe, [*base, f"data.video_frames={frames}", f"run_name=video-{frames}"]))
        train_s = time.time() - t0
        rows.append(
            {"arm": name, "train_s": train_s, "run_id": result.run_id} | score_videos(result.checkpoint, data["test"])
        )
    tags = sorted(rows[0]["per_tag_AP"])
    table = [{"tag": t} | {r["arm"]: r["per_tag_AP"][t] for r in rows} for t in tags]
    table.append({"tag": "macro mAP"} | {r["arm"]: r["video_mAP"] for r in rows})
    table.append({"tag": "train seconds"} | {r["arm"]: r["train_s"] for r in rows})
    print(f"\nper-tag AP on {a.test} test videos, scored by the ONNX scorer (max over 8 frames)")
    print_table(table, ["tag", *[r["arm"] for r in rows]])
    print(f"wrote {write_json(a.out, {'rows': rows, 'labeled': a.labeled, 'test': a.test, 'epochs': a.epochs})}")


if __name__ == "__main__":
    main()
