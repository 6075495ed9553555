"""How different the strong view is from the weak one, as a trained model sees them.

    python benchmarks/strong_view.py --checkpoint <run>/last.pt --manifest data/test.csv
    python benchmarks/strong_view.py --quick       # trains a tiny model first (smoke size)

Consistency and pseudo-label methods learn only where teacher (weak view) and student
(strong view) disagree. For each creative of the manifest, the model scores the weak
view and a strong view; reported is the mean absolute difference of the tag
probabilities, per tag and overall, for the strong view before this change (flips and a
90-degree rotation of the whole creative, crop order shuffled) and after (crops re-drawn
from a pool of the creative's windows, every view flipped and rotated independently).
Averaged over ``--draws`` random strong views.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_bench_dir, print_table, synth_once, write_json  # noqa: E402


def legacy_strong(images: torch.Tensor, pool: torch.Tensor | None = None, native: int = 0) -> torch.Tensor:
    """The strong view as it was: the same flip and rotation for every view of a creative, crops shuffled."""
    from training.augment import hflip, rot90, vflip, view_shuffle_crops

    return view_shuffle_crops(rot90(vflip(hflip(images))), native=native)


@torch.no_grad()
def disagreement(model, views, pool, augment, draws: int, native: int, batch: int = 128) -> np.ndarray:
    """Mean |p(weak) - p(augment)| per tag over creatives and draws: ``(T,)``; the ``native`` last views stay put."""
    from training.augment import weak

    total = None
    for d in range(draws):
        torch.manual_seed(d)
        diffs = []
        for i in range(0, len(views), batch):
            x, p = views[i : i + batch], pool[i : i + batch]
            pw = torch.sigmoid(model(weak(x, native=native))[0])
            ps = torch.sigmoid(model(augment(x, p, native=native))[0])
            diffs.append((pw - ps).abs())
        m = torch.cat(diffs).mean(0).numpy()
        total = m if total is None else total + m
    return total / draws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="a trained run's last.pt (default: train a small model)")
    ap.add_argument("--manifest", default=None, help="creatives to score (default: the synthetic test split)")
    ap.add_argument("--pool", type=int, default=4, help="extra detail windows per creative")
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/strong_view.json")
    a = ap.parse_args()

    from creative_qa.preprocess import PreprocessSpec
    from creative_qa.taxonomy import load_taxonomy
    from training.augment import strong
    from training.config import load_config
    from training.data import load_manifest_dataset
    from training.loop import load_checkpoint, train
    from training.model import model_from_checkpoint

    tags = load_taxonomy().tag_names
    checkpoint, manifest = a.checkpoint, a.manifest
    if checkpoint is None or manifest is None:
        n = 64 if a.quick else 1000
        data = synth_once(
            default_bench_dir(f"strong-view-{n}"), n_labeled=n, n_unlabeled=0, n_test=n // 4, seed=0, progress=False
        )
        manifest = manifest or str(data["test"])
        if checkpoint is None:
            epochs = 1 if a.quick else 10
            cfg = load_config("demo", [f"data.labeled={data['train_labeled']}", f"optim.epochs={epochs}"])
            checkpoint = str(train(cfg).checkpoint)
    ckpt = load_checkpoint(checkpoint)
    spec = PreprocessSpec.from_dict(ckpt.preprocess)
    native = spec.native_crops + spec.grid_view  # the augmentations keep these views in their role
    ds, _ = load_manifest_dataset(manifest, tags, spec, pool=a.pool, desc="views")
    model = model_from_checkpoint(ckpt)
    before = disagreement(model, ds.views, ds.pool, legacy_strong, a.draws, native)
    after = disagreement(model, ds.views, ds.pool, strong, a.draws, native)
    rows = [{"tag": t, "before": float(b), "after": float(x)} for t, b, x in zip(tags, before, after, strict=True)]
    rows.append({"tag": "mean", "before": float(before.mean()), "after": float(after.mean())})
    print(f"mean |p(weak) - p(strong)| per tag, {len(ds)} creatives, {a.draws} draws")
    print_table(rows, ["tag", "before", "after"])
    print(write_json(a.out, {"checkpoint": checkpoint, "manifest": manifest, "rows": rows}))


if __name__ == "__main__":
    main()
