"""The head refit's two settings, chosen on the regime grid's held-out split, and what the refit does on every split.

    python benchmarks/head_refit.py                          # n400-heavy and n2000-light, default_rates and floor
    python benchmarks/head_refit.py --cells n400-light --arms default,floor
    python benchmarks/head_refit.py --grid-dir DIR           # a grid kept elsewhere (learning.py --data)

``training/refit.py`` ends every recipe by refitting the tag head on the labeled training split over the trained
features. Its two settings (``head.backbone_scale``: how much the backbone's standardised features are scaled
against the grid view's and the measurements'; ``head.c``: the L2 strength) were chosen here, on stored runs of
``learning.py --grid`` trained *without* the refit (checkpoints whose config has no ``head.refit``; the newest
such run per cell, arm and seed): for each run, its checkpoint's head features of its labeled training split
(rebuilt as ``split_val`` made it), of the grid's held-out split (clean labels: the benchmark's validation),
test, foreign and the real photos; then ``training.refit.fit_logistic`` on the training split at each setting,
with the run's own forward correction (its recipe's rates), and macro mAP on every split. The run's trained
head is the ``trained`` row; a ``mix m`` row mixes its logits (weight ``m``) with the refit's at the shipped
setting, a ``syn m`` row on the tags defect synthesis teaches only (``head.keep`` on ``Method.taught_tags``, as
training does). The setting with the highest mean held-out mAP over all runs is the choice (those within ``TIE``
of it are named as ties); test, foreign and the real photos are reported, never used to choose. ``head.keep`` is
chosen the same way over the runs of the arms that train on the pool (every arm but the floor), ties going to the
least departure from the refit; then each cell's arm at that head against the floor's refit, with the grid's
paired interval, and the real photos' per-tag AP. Stored runs trained without the refit: ``learning.py --cell ...
--set head.refit=false``.
Writes ``benchmarks/results/head_refit.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from annotator_rates import GRID_DIR  # noqa: E402
from common import default_bench_dir, print_table, write_json  # noqa: E402

SPLITS = ("heldout", "test", "foreign", "realphoto")
SCALES = (0.1, 0.3, 1.0)
CS = (0.01, 0.03, 0.1)
MIXES = (0.1, 0.25, 0.5, 0.75)  # the trained head's weight in a logit mix with the refit at the shipped setting
FLOOR = "floor"  # the arm that trains on the labels alone: it keeps none of its trained head (``head.keep`` 0)
TIE = 0.002  # held-out mAPs this close are a tie (the settings' spread over seeds is larger)


def untouched_runs(
    grid_dir: Path, cells: list[str], arms: list[str], refitted: bool = False
) -> list[tuple[str, str, int, Path]]:
    """``(cell, arm, seed, checkpoint)``: the newest stored run per cell, arm and seed whose head was not refitted
    (``refitted``: or was)."""
    from training.checkpoint import Checkpoint

    found: dict[tuple[str, str, int], tuple[float, Path]] = {}
    for cell in cells:
        for arm in arms:
            for path in sorted((grid_dir / "results" / cell).glob(f"{arm}-s*.json")):
                row = json.loads(path.read_text())
                ckpt = Path(row.get("checkpoint", ""))
                if not ckpt.is_file() or (Checkpoint.load(ckpt).config.get("head") or {}).get("refit") and not refitted:
                    continue
                key = (cell, arm, int(row["seed"]))
                if path.stat().st_mtime >= found.get(key, (-1.0,))[0]:
                    found[key] = (path.stat().st_mtime, ckpt)
    return [(c, a, s, ckpt) for (c, a, s), (_, ckpt) in sorted(found.items())]


def features_of(ckpt_path: Path, grid_dir: Path, cell: str) -> dict[str, Any]:
    """A run's head features and labels on its training split and each of ``SPLITS``, its recipe's rates."""
    import torch

    from creative_qa.preprocess import PreprocessSpec
    from training.checkpoint import Checkpoint
    from training.data import load_manifest_dataset
    from training.loop import cache_root, split_val
    from training.model import config_of, model_from_checkpoint
    from training.predict import head_features
    from training.refit import recipe_rates

    ckpt = Checkpoint.load(ckpt_path)
    cfg = config_of(ckpt)
    tags = [t["name"] for t in ckpt.taxonomy["tags"]]
    spec = PreprocessSpec.from_dict(ckpt.preprocess)
    model = model_from_checkpoint(ckpt).eval()
    cache = cache_root(cfg)
    ds, _ = load_manifest_dataset(cfg.data.labeled, tags, spec, desc=f"{cell} labeled", cache=cache)
    train, _ = split_val(ds, cfg.data.val_frac, cfg.seed)
    dev = torch.device("cpu")
    out = {"train": (head_features(model, train.views, dev), train.labels)}
    manifests = {"heldout": "heldout.csv", "test": "test.csv", "foreign": "foreign.csv"}
    manifests["realphoto"] = str(next(grid_dir.glob("realphoto-*/manifest.csv")).relative_to(grid_dir))
    for split, name in manifests.items():
        d, _ = load_manifest_dataset(str(grid_dir / name), tags, spec, desc=f"{cell} {split}", cache=cache)
        out[split] = (head_features(model, d.views, dev), d.labels)
    head = model.tag_head
    return {
        "splits": out,
        "trained": (head.weight.detach().float(), head.bias.detach().float()),
        "backbone_width": model.backbone_width,
        "rates": recipe_rates(cfg.method.params),
        "tags": tags,
    }


def macro_ap(labels, logits) -> float:
    """Macro AP over the tags with a known positive (``training.metrics``, as the grid reports it)."""
    from training.metrics import macro_map, per_tag_ap

    names = [str(j) for j in range(labels.shape[1])]
    return float(macro_map(per_tag_ap(logits.sigmoid().numpy(), labels.numpy(), names)))


def setting_name(scale: float, c: float) -> str:
    """A refit setting's row name: ``backbone_scale/c``."""
    return f"{scale:g}/{c:g}"


def mix_name(m: float, synthesised: bool = False) -> str:
    """A mix's row name (``mix 0`` is the shipped refit itself; ``syn m``: mixed on the synthesised tags only)."""
    return f"{'syn' if synthesised else 'mix'} {m:g}"


# the shipped refit, then the trained head mixed in on every tag, then on the synthesised tags only
MIX_OPTIONS = (mix_name(0.0), *(mix_name(m, syn) for syn in (False, True) for m in MIXES))


def measure_run(f: dict[str, Any]) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """mAP per split of the trained head, of the refit at each setting, and of the trained head's logits mixed with
    the shipped refit's (``mix m``: ``m`` of the trained head's; ``mix 0``, the refit); and for the mixes, each
    split's per-creative probabilities (the paired intervals) and the real photos' per-tag AP."""
    import torch

    from training.config import HeadConfig
    from training.refit import fit_logistic

    x, y = f["splits"]["train"]
    heads = {"trained": f["trained"]}
    for s in SCALES:
        for c in CS:
            scale = torch.ones(x.shape[1])
            scale[: f["backbone_width"]] = s
            w, b, fitted = fit_logistic(x, y, scale, c, *f["rates"])
            w[~fitted], b[~fitted] = f["trained"][0][~fitted], f["trained"][1][~fitted]
            heads[setting_name(s, c)] = (w, b)
    # both heads are linear in the same features: their logits' mix is one head, as the fold would store it
    (tw, tb), (rw, rb) = f["trained"], heads[setting_name(HeadConfig.backbone_scale, HeadConfig.c)]
    from training.degrade import synthesised_tags

    taught = set(synthesised_tags(f["tags"], grid_view=True))
    syn = torch.tensor([t in taught for t in f["tags"]])
    for m in (0.0, *MIXES):
        heads[mix_name(m)] = (m * tw + (1 - m) * rw, m * tb + (1 - m) * rb)
        if m:  # the defect synthesis's tags only: what the trained head learned from the pool's copies
            mw, mb = heads[mix_name(m)]
            heads[mix_name(m, True)] = (torch.where(syn[:, None], mw, rw), torch.where(syn, mb, rb))
    maps = {
        name: {sp: macro_ap(f["splits"][sp][1], f["splits"][sp][0] @ w.T + b) for sp in SPLITS}
        for name, (w, b) in heads.items()
    }
    from training.metrics import per_tag_ap

    y_real = f["splits"]["realphoto"][1]
    mixes = {}
    for name in MIX_OPTIONS:
        w, b = heads[name]
        probs = {sp: (f["splits"][sp][0] @ w.T + b).sigmoid().numpy() for sp in SPLITS}
        real_tags = per_tag_ap(probs["realphoto"], y_real.numpy(), f["tags"])
        mixes[name] = {"probs": probs, "realphoto_tags": real_tags}
    mixes["labels"] = {sp: f["splits"][sp][1].numpy() for sp in SPLITS}
    return maps, mixes


def keep_report(per_run: list[dict[str, Any]], mixes: list[dict[str, Any]], n_boot: int) -> dict[str, Any]:
    """``head.keep`` for the arms that train on the pool: the mix with the highest mean held-out mAP over their runs,
    every cell; then per cell that arm at the chosen mix against the floor's refit (``mix 0``), as the grid reports
    them: mean mAP per split, the paired 95 % interval of the difference (seeds paired, creatives resampled), and
    the real photos' per-tag AP."""
    from learning import paired_bootstrap

    pool = [i for i, r in enumerate(per_run) if r["arm"] != FLOOR]
    if not pool:
        return {}
    held = {n: float(np.mean([per_run[i]["mAP"][n]["heldout"] for i in pool])) for n in MIX_OPTIONS}
    # within TIE of the best held-out mAP, the mix that departs least from the refit: on the synthesised tags
    # before every tag, then the smallest keep (the refit itself first)
    best = max(held.values())
    ties = [n for n in MIX_OPTIONS if held[n] >= best - TIE]
    chosen = min(ties, key=lambda n: (not n.startswith("syn") and n != mix_name(0.0), float(n.split()[1])))
    cells = []
    for cell in sorted({per_run[i]["cell"] for i in pool}):
        for arm in sorted({per_run[i]["arm"] for i in pool if per_run[i]["cell"] == cell}):
            mine = sorted((i for i in pool if (per_run[i]["cell"], per_run[i]["arm"]) == (cell, arm)),
                          key=lambda i: per_run[i]["seed"])  # fmt: skip
            floor = {per_run[i]["seed"]: i for i, r in enumerate(per_run) if (r["cell"], r["arm"]) == (cell, FLOOR)}
            pairs = [(i, floor[per_run[i]["seed"]]) for i in mine if per_run[i]["seed"] in floor]
            row: dict[str, Any] = {"cell": cell, "arm": arm, "head": chosen, "pairs": len(pairs)}
            for sp in SPLITS:
                row[sp] = float(np.mean([per_run[i]["mAP"][chosen][sp] for i in mine]))
                if pairs and sp != "heldout":
                    a = [mixes[i][chosen]["probs"][sp] for i, _ in pairs]
                    b = [mixes[j][mix_name(0.0)]["probs"][sp] for _, j in pairs]
                    diff = float(np.mean([per_run[i]["mAP"][chosen][sp] - per_run[j]["mAP"][mix_name(0.0)][sp]
                                          for i, j in pairs]))  # fmt: skip
                    lo, hi = paired_bootstrap(a, b, mixes[pairs[0][0]]["labels"][sp], n=n_boot)
                    row[f"{sp}_diff"], row[f"{sp}_ci95"] = diff, [lo, hi]
            tags = mixes[mine[0]][chosen]["realphoto_tags"]
            row["realphoto_tags"] = {
                t: float(np.mean([mixes[i][chosen]["realphoto_tags"][t] for i in mine])) for t in tags
            }
            row["realphoto_tags_refit"] = {
                t: float(np.mean([mixes[i][mix_name(0.0)]["realphoto_tags"][t] for i in mine])) for t in tags
            }
            if pairs:
                row["floor"] = {
                    sp: float(np.mean([per_run[j]["mAP"][mix_name(0.0)][sp] for _, j in pairs])) for sp in SPLITS
                }
            cells.append(row)
    return {"heldout_by_mix": held, "chosen": chosen, "ties": ties, "cells": cells}


def print_keep(keep: dict[str, Any]) -> None:
    """``keep_report``'s choice, its cells against the floor, and the real photos' per-tag AP."""
    nan = float("nan")
    held = ", ".join(f"{n} {v:.3f}" for n, v in keep["heldout_by_mix"].items())
    print(f"\nhead.keep for the arms that train on the pool, chosen on held-out over every cell: {keep['chosen']}")
    print(f"(ties within {TIE} of the best: {', '.join(keep['ties'])}; the least departure from the refit chosen)")
    print(f"(mean held-out mAP: {held})")
    rows = []
    for r in keep["cells"]:
        out = {"cell": r["cell"], "arm": f"{r['arm']} ({r['head']})"}
        for sp in ("test", "foreign", "realphoto"):
            lo, hi = r.get(f"{sp}_ci95", (nan, nan))
            floor, diff = r.get("floor", {}).get(sp, nan), r.get(f"{sp}_diff", nan)
            out[sp] = f"{r[sp]:.3f} vs {floor:.3f}: {diff:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        rows.append(out)
    print("the arm at the chosen keep against the floor's refit: mean mAP, the difference, its paired 95 % interval")
    print_table(rows, ["cell", "arm", "test", "foreign", "realphoto"])
    print("real photos' per-tag AP: at the chosen keep (the refit alone)")
    tags = sorted({t for r in keep["cells"] for t in r["realphoto_tags"]})
    table = []
    for t in tags:
        row = {"tag": t}
        for r in keep["cells"]:
            row[r["cell"]] = f"{r['realphoto_tags'].get(t, nan):.3f} ({r['realphoto_tags_refit'].get(t, nan):.3f})"
        table.append(row)
    print_table(table, ["tag", *[r["cell"] for r in keep["cells"]]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid-dir", default=None, help=f"the grid's data folder (default: <home>/bench/{GRID_DIR})")
    ap.add_argument("--cells", default="n400-heavy,n2000-light")
    ap.add_argument("--arms", default="default_rates,floor")
    ap.add_argument(
        "--include-refitted", action="store_true",
        help="also runs trained with the refit (their 'trained' head is then the refit at the settings they ran)",
    )  # fmt: skip
    ap.add_argument("--bootstrap", type=int, default=500, help="resamples of each paired interval (the grid's)")
    ap.add_argument("--out", default="benchmarks/results/head_refit.json")
    a = ap.parse_args()
    grid_dir = Path(a.grid_dir) if a.grid_dir else default_bench_dir(GRID_DIR)
    runs = untouched_runs(grid_dir, a.cells.split(","), a.arms.split(","), a.include_refitted)
    if not runs:
        raise SystemExit(f"no stored grid runs trained without the head refit under {grid_dir}/results")
    per_run, mixes = [], []
    for cell, arm, seed, ckpt in runs:
        res, mixed = measure_run(features_of(ckpt, grid_dir, cell))
        per_run.append({"cell": cell, "arm": arm, "seed": seed, "checkpoint": str(ckpt), "mAP": res})
        mixes.append(mixed)
        print(f"{cell} {arm} s{seed}: trained {res['trained']['heldout']:.3f} held-out", file=sys.stderr, flush=True)
    names = list(per_run[0]["mAP"])
    table = [{"head": n, **{sp: float(np.mean([r["mAP"][n][sp] for r in per_run])) for sp in SPLITS}} for n in names]
    best = max((r for r in table if r["head"] != "trained"), key=lambda r: r["heldout"])
    print(
        f"Mean macro mAP over {len(per_run)} runs ({a.cells}; {a.arms}); head: trained, backbone_scale/c, or "
        "mix m (the trained head's logits, weight m, with the shipped refit's)"
    )
    print_table(table, ["head", *SPLITS])
    ties = [r["head"] for r in table if r["head"] != "trained" and r["heldout"] >= best["heldout"] - TIE]
    print(f"chosen on held-out: {best['head']} (within {TIE} of it, a tie: {', '.join(ties)})")
    groups = sorted({(r["cell"], r["arm"]) for r in per_run})
    by_group = []
    for cell, arm in groups:
        rs = [r for r in per_run if (r["cell"], r["arm"]) == (cell, arm)]
        for n in ("trained", best["head"]):
            by_group.append({"cell": cell, "arm": arm, "head": n, "seeds": len(rs)} | {
                sp: float(np.mean([r["mAP"][n][sp] for r in rs])) for sp in SPLITS})  # fmt: skip
    print_table(by_group, ["cell", "arm", "head", "seeds", *SPLITS])
    keep = keep_report(per_run, mixes, a.bootstrap)
    if keep:
        print_keep(keep)
    write_json(a.out, {"runs": per_run, "table": table, "chosen": best["head"], "by_group": by_group, "keep": keep})


if __name__ == "__main__":
    main()
