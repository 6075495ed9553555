"""How much each of the model's classical measurements (``training.measures``) says about each tag on its own.

    python benchmarks/measures.py           # the synthetic pool, test and the real photos: about a minute
    python benchmarks/measures.py --quick   # smoke size

For every measurement and defect tag: the average precision of ranking the creatives by the measurement
alone (no training), with the sign that ranks best on the **training pool** (synthetic creatives with clean
labels: the data the tolerances were chosen on, ``--variants``) applied to the other sets: the synthetic
test split and the real-photo benchmark (``benchmarks/realphoto.py``), which nothing was chosen on. The
views are the default model's (``creative_qa.preprocess`` with ``training/config.py``'s model settings).

``--variants`` also prints the tolerances the module's defaults were chosen among, on each set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_bench_dir, print_table, realphoto_n, realphoto_set, synth_once, write_json  # noqa: E402


def views_of(manifest: Path, spec) -> tuple[np.ndarray, object]:
    """The manifest's still images' views ``(N, V, S, S, 3)`` and their rows (videos are left out)."""
    from tqdm import tqdm

    from creative_qa.manifest import read_manifest
    from creative_qa.media import is_video_path, load_frame
    from creative_qa.preprocess import preprocess

    df = read_manifest(manifest)
    df = df[[not is_video_path(p) for p in df.path]].reset_index(drop=True)
    root = manifest.parent
    views = [preprocess(load_frame(root / p), spec) for p in tqdm(df.path, desc=manifest.stem, leave=False)]
    return np.stack(views), df


def direct_ap(values: np.ndarray, labels: np.ndarray, sign: float) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, sign * values)) if 0 < labels.sum() < len(labels) else float("nan")


def variants(views: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, float]:
    """The bar tolerances the defaults were chosen among: letterboxed AP per (spread, mean difference)."""
    import torch

    from training import measures

    x = torch.from_numpy(views[:, 0]).float()
    out = {}
    for tol in ((0.25, 1.0), (0.5, 1.0), (1.0, 1.0), (0.5, 2.0), (1.0, 3.0), (2.0, 3.0), measures.FLAT):
        share = measures.bar_share(x, tol)[0].numpy()
        out[f"bars {tol[0]:g}/{tol[1]:g}"] = direct_ap(share, labels["letterboxed"], 1.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=1600, help="synthetic training creatives (clean labels)")
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--realphoto-n", type=int, default=None, help="real-photo creatives (1000; 0: none)")
    ap.add_argument("--variants", action="store_true", help="also the tolerances the defaults were chosen among")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/measures.json")
    a = ap.parse_args()
    if a.quick:
        a.pool, a.test = 120, 60
    import torch

    from creative_qa.taxonomy import load_taxonomy
    from training.config import load_config
    from training.loop import spec_of
    from training.measures import NAMES, measure

    cfg = load_config("default")
    spec = spec_of(cfg)
    tags = list(load_taxonomy().group("defect"))
    bench = default_bench_dir(f"measures-P{a.pool}-T{a.test}")
    data = synth_once(bench, n_labeled=a.pool, n_unlabeled=0, n_test=a.test, seed=0, progress=False)
    sets = {"pool": data["train_labeled_clean"], "test": data["test"]}
    n_real = realphoto_n(a.realphoto_n, a.quick)
    if n_real:
        sets["realphoto"] = realphoto_set(n_real, a.quick)
    signs: dict[tuple[str, str], float] = {}
    rows, extra = [], {}
    for split, manifest in sets.items():
        views, df = views_of(Path(manifest), spec)
        t = torch.from_numpy(views)
        m = measure(t[:, 0], t[:, 1 : 1 + spec.crops]).numpy()
        labels = {tag: df[tag].to_numpy(dtype=float) for tag in tags}
        for tag in tags:
            row = {"split": split, "tag": tag, "prior": round(float(labels[tag].mean()), 3)}
            for j, name in enumerate(NAMES):
                if split == "pool":  # the sign is chosen here, where the tolerances were
                    up, down = (direct_ap(m[:, j], labels[tag], s) for s in (1.0, -1.0))
                    signs[(tag, name)] = 1.0 if not down > up else -1.0
                row[name] = round(direct_ap(m[:, j], labels[tag], signs[(tag, name)]), 3)
            rows.append(row)
        if a.variants:
            extra[split] = variants(views, labels)
    print_table(rows, ["split", "tag", "prior", *NAMES])
    for split, v in extra.items():
        print(f"{split}: letterboxed AP by bar tolerance: " + ", ".join(f"{k} {x:.3f}" for k, x in v.items()))
    write_json(a.out, {"rows": rows, "variants": extra, "sets": {k: str(v) for k, v in sets.items()}})


if __name__ == "__main__":
    main()
