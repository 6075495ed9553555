"""How much of the clean-label oracle the learning methods recover from few, noisy labels.

    python benchmarks/learning.py            # default scale: under two hours on 2 CPU cores
    python benchmarks/learning.py --quick    # a few minutes (what CI smoke-tests)

Data (fixed data seed): synthetic creatives; 10 % of the pool is labeled with simulated
annotator noise (30 % of positives missed, 5 % false positives, 20 % of values blank),
90 % is unlabeled. Three evaluation splits, all with clean labels: ``test`` (the
training generator), ``heldout`` (a font and a blur kernel the pool never uses) and
``foreign`` (every defect made by an independent implementation, on a background and
a font the pool never uses: ``benchmarks/foreign.py``).

Arms, all with the same backbone, input, strong view, EMA weight averaging and number of
optimiser steps:

* ``floor``: supervised on the noisy labeled 10 %;
* ``clean_labeled``: supervised on the same creatives with their clean labels (what the
  noise costs: floor -> clean_labeled; what quantity costs: clean_labeled -> oracle);
* ``oracle``: supervised on the whole pool with clean labels;
* every method's recipe, and the ``default`` recipe.

The floor, clean_labeled, oracle and default arms run ``--seeds`` training seeds (mean ±
std); the other method arms run one (all of them with ``--all-seeds``). Reported per arm:
validation mAP (what recipes are chosen by: never test), test / held-out / foreign macro
mAP, fine-detail mAP, quality Spearman, flag F1 at the model's validation-calibrated
thresholds and at noise-corrected prior-matched thresholds (no labels spent), wall time
and passes (views trained on, views forwarded without gradient). Headline: gap closed =
(default - floor) / (oracle - floor), with a paired bootstrap 95 % interval on default -
floor over test creatives. Also printed: the noisy set's per-tag label precision and
recall. Every arm is an MLflow run under one parent run, which also gets the table, the
JSON and a chart.

**The regime grid** (issue 23): does the default hold with few or many labels, light or heavy noise?

    python benchmarks/learning.py --grid                  # 4 cells, every arm (hours on 2 CPU cores)
    python benchmarks/learning.py --cell n400-heavy       # one cell alone (--cell a,b for several)
    python benchmarks/learning.py --grid --quick          # a tiny grid in about two minutes (smoke-tested)

Cells ``n{400,2000}-{light,heavy}``: N noisy labels, light noise (10 % of positives missed, 2 %
false positives, 10 % blank) or heavy (30 % / 5 % / 20 %). One design of data for every cell:
a base set made once (2,000 labeled candidates, one pool of 1,600 unlabeled creatives, the test,
held-out and foreign splits); a cell labels the base's first N with its own annotator noise (so
n400's creatives are n2000's first 400) and trains with the same 1,600 unlabeled pool; the oracle
sees those N and the pool with clean labels. Arms: floor, clean_labeled, oracle, default and the
candidates (``CANDIDATES``), all at the same budget; ``rules`` is the rule checker
(``benchmarks/rules.py``) fitted on the cell's noisy labels. Floor and default run ``--seeds``
seeds (3), the others one (``--all-seeds``: all). Every arm is scored on ``test``, ``foreign`` and
``realphoto`` (``benchmarks/realphoto.py``, 1,000 creatives, built once); ``heldout`` too, in the
JSON only. Printed: one table of arms x cells x those splits (mean ± std over seeds) with a row per
cell of default minus floor and its paired bootstrap 95 % interval (seeds paired, creatives
resampled); per cell, the rule checker's per-tag AP beside the default's on every split, with a line
naming the tags where the rules win; the default's flag table on every split (per tag: the share
flagged at its own calibrated thresholds, the true share, the flags' precision and recall).

Resumable: each (cell, arm, seed) is stored under ``<home>/bench/learning-grid-.../results/<cell>/``
as ``<arm>-s<seed>-<training key>-<evaluation key>.json`` (+ ``.npz``: every split's probabilities and
labels). The training key hashes the resolved config, the cell's manifests and the code (``creative_qa``,
``training``, recipes, taxonomies, torch version, device, and the data-making functions here); the
evaluation key hashes the evaluation manifests and code. A stored result with both keys is loaded;
one with only the training key is re-evaluated from its checkpoint; anything else is trained. The
rule checker is refitted every run (its measurements are cached beside each manifest).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DETAIL_TAGS,
    default_bench_dir,
    flag_policy_of,
    flag_stats,
    made_once,
    print_table,
    synth_once,
    write_json,
)

from creative_qa.synth import ANNOTATOR_NOISE  # noqa: E402

HELDOUT_FONT = "cmss10.ttf"
HELDOUT_BLUR = "motion"
METHOD_ARMS = (
    "supervised_asl",
    "large_loss",
    "mean_teacher",
    "fixmatch",
    "cap",
    "dividemix",
    "noisy_student",
    "pi_model",
    "temporal_ensembling",
    "uda",
    "vat",
    "mixmatch",
    "meta_pseudo_labels",
    "comatch",
    "contrastive_pretrain",
    "full",
    "synthesis",
    "synthesis_forward",
    "synthesis_doubtful",
)
BASE_ARMS = ("floor", "clean_labeled", "oracle")
ARMS = (*BASE_ARMS, *METHOD_ARMS, "default")
EVAL_SPLITS = ("test", "heldout", "foreign")


def synth_configs():
    """The generator's settings for the pool and test split, and for the held-out split (a font and a blur
    kernel the pool never uses); neither uses the foreign split's font or background."""
    from foreign import FOREIGN_BACKGROUND, FOREIGN_FONT

    from creative_qa.synth import SynthConfig
    from creative_qa.synth.fonts import available_fonts
    from creative_qa.synth.render import BACKGROUNDS

    fonts = tuple(Path(p).name for p in available_fonts() if Path(p).name not in (HELDOUT_FONT, FOREIGN_FONT))
    backgrounds = tuple(b for b in BACKGROUNDS if b != FOREIGN_BACKGROUND)
    train_cfg = SynthConfig(fonts=fonts, blur_kernels=("gaussian", "box"), backgrounds=backgrounds)
    held_cfg = SynthConfig(fonts=(HELDOUT_FONT,), blur_kernels=(HELDOUT_BLUR,), backgrounds=backgrounds)
    return train_cfg, held_cfg


def make_data(out: Path, pool: int, test: int, heldout: int, seed: int, rates: dict[str, float]) -> dict[str, Path]:
    from foreign import make_foreign

    train_cfg, held_cfg = synth_configs()
    n_lab = max(8, pool // 10)
    paths = synth_once(
        out,
        n_labeled=n_lab,
        n_unlabeled=pool - n_lab,
        n_test=test,
        seed=seed,
        cfg=train_cfg,
        heldout_cfg=held_cfg,
        n_heldout=heldout,
        progress=True,
        **rates,
    )
    foreign = out / "foreign.csv"
    made_once(out / "foreign.json", lambda: make_foreign(out, heldout, seed), (foreign,), n=heldout, seed=seed)
    paths["foreign"] = foreign
    # The oracle sees the whole pool with clean labels.
    oracle = out / "oracle_clean.csv"
    pd.concat([pd.read_csv(paths["train_labeled_clean"]), pd.read_csv(paths["unlabeled_clean"])]).to_csv(
        oracle, index=False
    )
    paths["oracle"] = oracle
    return paths


class Evaluator:
    """Loads each evaluation split once and scores every arm's final model on all of them.

    ``splits``: the splits scored; ``datasets``: a dict shared by several evaluators (the grid's cells
    share their evaluation splits and pool); ``view_cache``: a view-cache folder (None = decode into RAM);
    ``every_split``: also keep every split's probabilities and labels and measure the flags on each."""

    def __init__(
        self,
        data: dict[str, Path],
        tags: list[str],
        rates: dict[str, float],
        splits: tuple[str, ...] = EVAL_SPLITS,
        datasets: dict[tuple[str, str, str], Any] | None = None,
        view_cache: Path | None = None,
        every_split: bool = False,
    ):
        self.data, self.tags, self.rates, self.splits = data, tags, rates, splits
        self.cache: dict[tuple[str, str, str], Any] = {} if datasets is None else datasets
        self.view_cache, self.every_split = view_cache, every_split
        self.labeled = pd.read_csv(data["train_labeled"])

    def dataset(self, split: str, spec):
        from training.data import load_manifest_dataset

        key = (split, str(self.data[split]), str(spec))
        if key not in self.cache:
            self.cache[key], _ = load_manifest_dataset(
                str(self.data[split]), self.tags, spec, desc=split, cache=self.view_cache
            )
        return self.cache[key]

    def __call__(self, checkpoint: str) -> dict[str, Any]:
        from creative_qa.manifest import label_matrix
        from creative_qa.preprocess import PreprocessSpec
        from training.loop import load_checkpoint, predict, resolve_device
        from training.metrics import evaluate, flag_f1, prior_matched_thresholds
        from training.model import model_from_checkpoint

        ckpt = load_checkpoint(checkpoint)
        spec = PreprocessSpec.from_dict(ckpt.preprocess)
        device = resolve_device("auto")
        model = model_from_checkpoint(ckpt).to(device)
        pool_probs, _ = predict(model, self.dataset("unlabeled", spec), device)
        prior_thr = prior_matched_thresholds(
            pool_probs,
            label_matrix(self.labeled, self.tags),
            self.tags,
            self.rates["miss_rate"],
            self.rates["fp_rate"],
        )
        policy = flag_policy_of(ckpt)
        flag_thr = {t: f.threshold if f.reliable else np.inf for t, f in policy.tags.items()}  # unreliable: never
        out: dict[str, Any] = {"probs": {}}
        if self.every_split:
            out |= {"labels": {}, "thresholds": ckpt.thresholds or {}, "unreliable": sorted(policy.unreliable)}
            out |= {"annotator_rates": {"miss": policy.miss_rate, "fp": policy.fp_rate, "source": policy.rates_source}}
        for split in self.splits:
            ds = self.dataset(split, spec)
            probs, quality = predict(model, ds, device)
            labels = ds.labels.numpy()
            m = evaluate(probs, quality, labels, ds.quality.numpy(), self.tags, prefix="")
            ap = {t: m[f"AP_{t}"] for t in self.tags if f"AP_{t}" in m}
            out[f"{split}_mAP"] = m["mAP"]
            out[f"{split}_per_tag_AP"] = ap
            detail = [ap[t] for t in DETAIL_TAGS if t in ap]
            out[f"{split}_detail_mAP"] = float(np.mean(detail)) if detail else None
            if split == "test":
                out["test_quality_spearman"] = m.get("quality_spearman")
                out["test_flag_F1"] = flag_f1(probs, labels, self.tags, flag_thr)["flag_F1"]
                out["test_flag_F1_prior"] = flag_f1(probs, labels, self.tags, prior_thr)["flag_F1"]
                out["probs"][split] = probs
            if self.every_split:
                out["probs"][split], out["labels"][split] = probs, labels
                out[f"{split}_flags"] = flag_stats(probs, labels, self.tags, policy)
                out[f"{split}_flag_F1"] = flag_f1(probs, labels, self.tags, flag_thr)["flag_F1"]
        return out


def run_arm(name: str, recipe: str, overrides: list[str], experiment: str, evaluator: Evaluator) -> dict[str, Any]:
    from training.config import load_config
    from training.loop import train

    cfg = load_config(recipe, [*overrides, f"experiment={experiment}", f"run_name={name}"])
    t = time.time()
    result = train(cfg)
    row = {
        "arm": name,
        "seed": cfg.seed,
        "run_id": result.run_id,
        "checkpoint": str(result.checkpoint),
        "val_mAP": result.metrics.get("val_mAP"),
        "wall_s": time.time() - t,
        **result.passes,
    }
    return row | evaluator(row["checkpoint"])


def arm_specs(
    data: dict[str, Path], rates: dict[str, float], epochs: int, doubtful_top: int
) -> dict[str, tuple[str, list[str]]]:
    """arm -> (recipe, overrides); the shared defaults give every arm the same backbone, input, view and EMA.
    ``rates``: the annotators' miss and false-positive rates, known here (cap and synthesis_forward use them)."""
    labeled = [f"data.labeled={data['train_labeled']}"]
    unl = [*labeled, f"data.unlabeled={data['unlabeled']}"]
    supervised = ["method.name=supervised", "method.params={}"]
    miss, fp = rates["miss_rate"], rates["fp_rate"]
    loss_rates = [f"method.params.loss_params.miss_rate={miss}", f"method.params.loss_params.fp_rate={fp}"]
    return {
        "floor": ("default", [*labeled, *supervised]),
        "clean_labeled": ("default", [f"data.labeled={data['train_labeled_clean']}", *supervised]),
        "oracle": ("default", [f"data.labeled={data['oracle']}", *supervised]),
        "supervised_asl": ("supervised_asl", labeled),
        "large_loss": ("large_loss", labeled),
        "mean_teacher": ("mean_teacher", unl),
        "fixmatch": ("fixmatch", unl),
        "cap": ("cap", [*unl, f"method.params.miss_rate={miss}", f"method.params.fp_rate={fp}"]),
        "dividemix": ("dividemix", unl),
        # two rounds (teacher, student) share the budget: half the epochs each
        "noisy_student": ("noisy_student", [*unl, f"optim.epochs={max(1, epochs // 2)}"]),
        **{m: (m, unl) for m in ("pi_model", "temporal_ensembling", "uda", "vat", "mixmatch", "comatch")},
        "meta_pseudo_labels": ("meta_pseudo_labels", unl),  # its teacher's passes count in its budget
        # stage 1 contrastive on the pool, stage 2 defect synthesis: the stages share the epochs
        "contrastive_pretrain": ("contrastive_pretrain", unl),
        "full": ("full", unl),  # Mean Teacher + defect synthesis on the pool
        "synthesis": ("synthesis", unl),  # defect synthesis on the pool, no consistency
        # ... with the labeled loss corrected for the annotators' rates (known here, as for cap)
        "synthesis_forward": ("synthesis_forward", [*unl, *loss_rates]),
        # ... and the labels `creative-qa label-issues` finds most doubtful (cross-validated) blanked
        "synthesis_doubtful": (
            "synthesis_forward",
            [*unl, *loss_rates, f"method.params.doubtful_top={doubtful_top}"],
        ),
        "default": ("default", unl),
        # what `auto` trains after the floor: the default given the floor's estimated rates (added per seed)
        "default_rates": ("default", unl),
    }


def paired_bootstrap(a: list[np.ndarray], b: list[np.ndarray], labels: np.ndarray, n: int = 500, seed: int = 0):
    """95 % interval of mean-over-seeds mAP(a) - mAP(b), resampling test creatives (the same draw for both)."""
    from training.metrics import macro_map, per_tag_ap

    rng = np.random.default_rng(seed)
    tags = [str(i) for i in range(labels.shape[1])]
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        d = [
            macro_map(per_tag_ap(pa[idx], labels[idx], tags)) - macro_map(per_tag_ap(pb[idx], labels[idx], tags))
            for pa, pb in zip(a, b, strict=True)
        ]
        diffs.append(float(np.mean(d)))
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


NUMERIC = (
    "val_mAP",
    "test_mAP",
    "heldout_mAP",
    "foreign_mAP",
    "test_detail_mAP",
    "test_quality_spearman",
    "test_flag_F1",
    "test_flag_F1_prior",
    "wall_s",
    "train_views",
    "forward_only_views",
)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per arm: the mean over its seeds, and the std of the headline figures."""
    out = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        rs = [r for r in rows if r["arm"] == arm]
        s: dict[str, Any] = {"arm": arm, "seeds": len(rs)}
        for k in NUMERIC:
            vals = [r[k] for r in rs if r.get(k) is not None]
            s[k] = float(np.mean(vals)) if vals else None
        for k in ("test_mAP", "heldout_mAP", "foreign_mAP"):
            s[f"{k}_std"] = float(np.std([r[k] for r in rs])) if len(rs) > 1 else None
        s["test_mAP ±"] = f"{s['test_mAP']:.3f} ± {s['test_mAP_std']:.3f}" if len(rs) > 1 else f"{s['test_mAP']:.3f}"
        out.append(s)
    return out


def chart(summary: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    names = [r["arm"] for r in summary]
    ax.bar(names, [r["test_mAP"] or 0 for r in summary], color="#4c72b0", label="test")
    ax.plot(names, [r.get("heldout_mAP") or 0 for r in summary], "o", color="#dd8452", label="held-out")
    ax.plot(names, [r.get("foreign_mAP") or 0 for r in summary], "s", color="#55a868", label="foreign")
    ax.set_ylabel("macro mAP")
    ax.set_ylim(0, 1)
    ax.legend()
    plt.xticks(rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def label_noise_table(data: dict[str, Path], tags: list[str]) -> list[dict[str, Any]]:
    from creative_qa.manifest import label_matrix
    from training.metrics import label_quality

    noisy, clean = pd.read_csv(data["train_labeled"]), pd.read_csv(data["train_labeled_clean"])
    q = label_quality(label_matrix(noisy, tags), label_matrix(clean, tags), tags)
    return [{"tag": t, **v} for t, v in q.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=4000, help="creatives in the training pool (10 %% labeled)")
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--heldout", type=int, default=300, help="size of the held-out and of the foreign split")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps-per-epoch", type=int, default=25)
    ap.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="training seeds for floor, clean_labeled, oracle, default (3; --quick 2); in the grid for floor and "
        "default (3; --quick 1)",
    )
    ap.add_argument("--all-seeds", action="store_true", help="every arm runs --seeds seeds, not only those four")
    ap.add_argument("--miss-rate", type=float, default=ANNOTATOR_NOISE["miss_rate"])
    ap.add_argument("--fp-rate", type=float, default=ANNOTATOR_NOISE["fp_rate"])
    ap.add_argument("--blank-rate", type=float, default=ANNOTATOR_NOISE["blank_rate"])
    ap.add_argument(
        "--arms",
        default="all",
        help="comma-separated subset of: "
        + ",".join(ARMS)
        + "; in the grid (all = "
        + ",".join(GRID_ARMS)
        + ") of: "
        + ",".join(GRID_CHOICES),
    )
    ap.add_argument("--label-issues", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--label-issue-epochs", type=int, default=10)
    ap.add_argument("--doubtful-top", type=int, default=200, help="labels synthesis_doubtful blanks")
    ap.add_argument("--quick", action="store_true", help="tiny scale, minutes")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--out", help="JSON results (benchmarks/results/learning.json; the grid's learning_grid.json)")
    grid = ap.add_argument_group("the regime grid (--grid, or --cell)")
    grid.add_argument("--grid", action="store_true", help="run the regime grid: " + ", ".join(GRID_CELLS))
    grid.add_argument("--cell", help="comma-separated cells to run (implies --grid), e.g. n400-heavy or n2000-light")
    grid.add_argument("--unlabeled", type=int, help=f"the pool of unlabeled creatives, every cell ({GRID_POOL})")
    grid.add_argument("--realphoto-n", type=int, help="creatives in the real-photo split (1000; --quick 24)")
    grid.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples of the paired interval")
    grid.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a config override for every arm (repeatable), e.g. head.refit=false: part of each run's key",
    )  # fmt: skip
    grid.add_argument(
        "--report", metavar="GRID_JSON",
        help="print the grid's tables again from a stored --grid JSON and the arrays stored beside its runs (no "
        "training: the tables of a grid measured by another commit's code, with this code's report)",
    )  # fmt: skip
    a = ap.parse_args()
    if a.report:
        report_grid(Path(a.report), a.bootstrap, a.out)
        return
    if a.grid or a.cell:
        run_grid(a)
        return
    a.out = a.out or "benchmarks/results/learning.json"
    a.seeds = a.seeds or 3
    if a.quick:
        a.pool, a.test, a.heldout, a.epochs, a.steps_per_epoch, a.seeds = 200, 40, 30, 2, 3, 2

    import mlflow
    from creative_qa.taxonomy import load_taxonomy
    from training import tracking
    from training.config import load_config

    tags = load_taxonomy().tag_names
    rates = {"miss_rate": a.miss_rate, "fp_rate": a.fp_rate, "blank_rate": a.blank_rate}
    t0 = time.time()
    data = make_data(
        default_bench_dir(f"learning-{a.pool}-{a.data_seed}"), a.pool, a.test, a.heldout, a.data_seed, rates
    )
    print(f"data ready in {time.time() - t0:.0f}s: {data['train_labeled']}")
    noise = label_noise_table(data, tags)
    print("\nthe noisy labeled set against the truth (per tag, over given labels):")
    print_table(noise, ["tag", "given_pos", "precision", "recall", "wrong_zeros"])

    common = [f"optim.epochs={a.epochs}", f"optim.steps_per_epoch={a.steps_per_epoch}", f"data.test={data['test']}"]
    if a.quick:
        common += ["model.detail_side=128"]
    arms = arm_specs(data, rates, a.epochs, a.doubtful_top)
    default_cfg = load_config("default")
    wanted = list(arms) if a.arms == "all" else a.arms.split(",")
    unknown = set(wanted) - set(arms)
    if unknown:
        raise SystemExit(f"unknown arms {sorted(unknown)}; choose from {', '.join(arms)}")
    # The default recipe equals one method arm: run that arm with the seeds and report it twice.
    same_as = next((m for m in METHOD_ARMS if load_config(arms[m][0]).method == default_cfg.method), None)
    if "default" in wanted and same_as in wanted:
        wanted.remove("default")
    multi = set(arms) if a.all_seeds else {*BASE_ARMS, "default", *([same_as] if same_as else [])}

    exp = "bench-learning"
    evaluator = Evaluator(data, tags, rates)
    rows: list[dict[str, Any]] = []
    with mlflow.start_run(experiment_id=tracking.setup(exp), run_name=f"learning-{a.pool}") as parent:
        mlflow.log_params(
            {
                "pool": a.pool,
                "epochs": a.epochs,
                "steps_per_epoch": a.steps_per_epoch,
                "seeds": a.seeds,
                **rates,
                "default_method": default_cfg.method.name,
            }
        )
        for name in wanted:
            recipe, overrides = arms[name]
            if name == "synthesis_doubtful":  # the cross-validated label-issue list, made once per data and budget
                li_common = [*common, f"optim.epochs={a.label_issue_epochs if not a.quick else 1}"]
                overrides = [*overrides, f"method.params.doubtful={doubtful_csv(data, li_common, a.quick)}"]
            for seed in range(a.seeds if name in multi else 1):
                print(f"--- arm {name} ({recipe}), seed {seed}", flush=True)
                rows.append(run_arm(name, recipe, [*common, *overrides, f"seed={seed}"], exp, evaluator))
        if same_as and any(r["arm"] == same_as for r in rows):
            rows += [r | {"arm": "default", "same_as": same_as} for r in rows if r["arm"] == same_as]
        summary = summarise(rows)
        by = {s["arm"]: s for s in summary}
        print()
        print_table(
            summary,
            [
                "arm",
                "seeds",
                *(("test_mAP ±" if k == "test_mAP" else k) for k in NUMERIC),
            ],
        )
        headline: dict[str, Any] = {}
        if {"floor", "oracle", "default"} <= set(by):
            for split in EVAL_SPLITS:
                f, o, d = (by[k][f"{split}_mAP"] for k in ("floor", "oracle", "default"))
                headline[f"gap_closed_{split}"] = (d - f) / (o - f) if abs(o - f) > 1e-9 else None
            test_labels = evaluator.dataset("test", _spec(rows[0])).labels.numpy()
            pd_ = [r["probs"]["test"] for r in rows if r["arm"] == "default"]
            pf = [r["probs"]["test"] for r in rows if r["arm"] == "floor"]
            k = min(len(pd_), len(pf))
            headline["default_minus_floor_test"] = by["default"]["test_mAP"] - by["floor"]["test_mAP"]
            headline["default_minus_floor_test_ci95"] = paired_bootstrap(pd_[:k], pf[:k], test_labels)
            print(
                f"\ndefault recipe ({default_cfg.method.name}): gap closed test {headline['gap_closed_test']:.3f}, "
                f"held-out {headline['gap_closed_heldout']:.3f}, foreign {headline['gap_closed_foreign']:.3f}; "
                f"default - floor on test {headline['default_minus_floor_test']:+.3f} "
                f"(paired bootstrap 95 % CI {headline['default_minus_floor_test_ci95'][0]:+.3f} .. "
                f"{headline['default_minus_floor_test_ci95'][1]:+.3f})"
            )
            mlflow.log_metrics({k: v for k, v in headline.items() if isinstance(v, float)})
        methods = [s for s in summary if s["arm"] in METHOD_ARMS and s["val_mAP"] is not None]
        if methods:
            best = max(methods, key=lambda s: s["val_mAP"])
            headline["best_on_validation"] = best["arm"]
            print(f"best method on validation mAP: {best['arm']} ({best['val_mAP']:.3f}); default recipe: {same_as}")
        li = None
        if a.label_issues:
            li = label_issue_precision(
                data, [*common, f"optim.epochs={a.label_issue_epochs if not a.quick else 1}"], a.quick
            )
            print("label issues, precision@k vs clean labels:", li)
        for s in summary:
            mlflow.log_metric(f"test_mAP_{s['arm']}", s["test_mAP"])
        for r in rows:
            r.pop("probs", None)
        out = write_json(
            a.out,
            {
                "args": vars(a),
                "summary": summary,
                "rows": rows,
                "headline": headline,
                "label_noise": noise,
                "label_issues": li,
                "parent_run_id": parent.info.run_id,
            },
        )
        mlflow.log_artifact(str(out))
        mlflow.log_artifact(str(chart(summary, out.with_suffix(".png"))))
        print(f"wrote {out} (and {out.with_suffix('.png')}); MLflow parent run {parent.info.run_id}")


def _spec(row: dict[str, Any]):
    from creative_qa.preprocess import PreprocessSpec
    from training.loop import load_checkpoint

    return PreprocessSpec.from_dict(load_checkpoint(row["checkpoint"]).preprocess)


def doubtful_csv(data: dict[str, Path], common: list[str], quick: bool) -> Path:
    """``creative-qa label-issues`` (3 folds) on the noisy labeled set, written once next to the data."""
    from creative_qa.preprocess import VIEWS_VERSION
    from training.label_issues import find_label_issues

    out = Path(data["train_labeled"]).parent / "label_issues_cv.csv"
    made_once(
        out.with_suffix(".json"),
        lambda: find_label_issues(_label_issue_cfg(data, common), folds=3).to_csv(out, index=False),
        (out,),
        common=common,
        quick=quick,
        views=VIEWS_VERSION,
    )
    return out


def _label_issue_cfg(data: dict[str, Path], common: list[str]):
    from training.config import load_config

    return load_config(
        "default",
        [
            *common,
            f"data.labeled={data['train_labeled']}",
            "method.name=supervised",
            "method.params={}",
            "data.test=null",
        ],
    )


def label_issue_precision(data: dict[str, Path], common: list[str], quick: bool) -> dict[str, dict[str, float]]:
    from training.label_issues import find_label_issues, precision_at_k

    ks = (10, 25) if quick else (50, 100, 200)
    cfg = _label_issue_cfg(data, common)
    out = {}
    for name, kwargs in (("cross_validated", {"folds": 3}), ("self_confidence", {"baseline": True})):
        issues = find_label_issues(cfg, **kwargs)
        out[name] = precision_at_k(issues, data["train_labeled_clean"], ks)
    return out


# ------------------------------------------------------------------------------------------- the regime grid
NOISE = {  # annotator noise of a grid cell: positives missed, negatives marked, values left blank
    "light": {"miss_rate": 0.1, "fp_rate": 0.02, "blank_rate": 0.1},
    "heavy": {"miss_rate": 0.3, "fp_rate": 0.05, "blank_rate": 0.2},
}
GRID_LABELS = (400, 2000)
GRID_CELLS = tuple(f"n{n}-{noise}" for n in GRID_LABELS for noise in NOISE)
QUICK_CELLS = ("n40-light", "n80-heavy")
GRID_POOL = 1600  # unlabeled creatives, the same pool in every cell
# The strongest recipes of the last table after the default (test mAP at 400 heavy-noise labels, RESULTS.md).
CANDIDATES = ("synthesis", "vat", "mixmatch")
GRID_ARMS = ("floor", "clean_labeled", "oracle", "default_rates", *CANDIDATES, "rules")
GRID_CHOICES = (*BASE_ARMS, "default", "default_rates", *(m for m in METHOD_ARMS if m != "synthesis_doubtful"), "rules")
SEEDED = ("floor", "default", "default_rates")  # the arms that run --seeds seeds (every arm with --all-seeds)
GRID_SPLITS = ("test", "foreign", "realphoto")  # the table's; heldout is measured too (in the JSON only)
GRID_EVAL = ("test", "heldout", "foreign", "realphoto")
NO_KEY = ("experiment", "run_name", "output_dir", "register_as")  # config fields that do not change a result


@dataclass(frozen=True)
class Cell:
    """One regime of the grid: ``n`` labeled creatives with one annotator noise (``n400-heavy``)."""

    n: int
    noise: str

    @classmethod
    def parse(cls, name: str) -> Cell:
        m = re.fullmatch(r"n(\d+)-(\w+)", name.strip())
        if not m or m.group(2) not in NOISE or int(m.group(1)) < 8:
            raise SystemExit(f"bad cell {name!r}: write n<labels>-<{'|'.join(NOISE)}>, labels >= 8 (e.g. n400-heavy)")
        return cls(int(m.group(1)), m.group(2))

    @property
    def name(self) -> str:
        return f"n{self.n}-{self.noise}"

    @property
    def rates(self) -> dict[str, float]:
        return NOISE[self.noise]


def make_grid_base(out: Path, n_labeled: int, pool: int, test: int, heldout: int, seed: int) -> dict[str, Path]:
    """The creatives every cell draws from, made once: ``n_labeled`` labeled candidates (clean labels), the
    unlabeled pool, and the test, held-out and foreign splits."""
    from foreign import make_foreign

    train_cfg, held_cfg = synth_configs()
    paths = synth_once(
        out,
        n_labeled=n_labeled,
        n_unlabeled=pool,
        n_test=test,
        seed=seed,
        cfg=train_cfg,
        heldout_cfg=held_cfg,
        n_heldout=heldout,
        progress=True,
    )  # NOTE: the generator's own noisy copy is not used: each cell draws its own noise on its first N
    foreign = out / "foreign.csv"
    made_once(out / "foreign.json", lambda: make_foreign(out, heldout, seed), (foreign,), n=heldout, seed=seed)
    return paths | {"foreign": foreign}


def _write_labels(df: pd.DataFrame, path: Path, tags: list[str]) -> Path:
    """A manifest with 1 / 0 / blank tag cells, rewritten only when its content changes."""
    out = df.copy()
    for t in tags:
        out[t] = out[t].map(lambda v: "" if pd.isna(v) else str(int(v)))
    text = out.to_csv(index=False)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def cell_data(base: dict[str, Path], cell: Cell, tags: list[str], seed: int) -> dict[str, Path]:
    """A cell's manifests, beside the base data: its ``n`` labeled creatives (the base's first ``n``, so a
    smaller cell's are a subset of a larger one's) with the cell's annotator noise, the same with clean
    labels, and the oracle's (those and the pool, clean)."""
    from creative_qa.synth import add_annotator_noise

    clean = pd.read_csv(base["train_labeled_clean"])
    if len(clean) < cell.n:
        raise SystemExit(f"{cell.name}: the base data has {len(clean)} labeled creatives")
    clean = clean.iloc[: cell.n].reset_index(drop=True)
    rng = np.random.default_rng([seed, 99, cell.n, list(NOISE).index(cell.noise)])
    noisy = add_annotator_noise(clean, tags, rng, quality_noise=0.05, **cell.rates)
    oracle = pd.concat([clean, pd.read_csv(base["unlabeled_clean"])], ignore_index=True)
    folder = Path(base["train_labeled_clean"]).parent
    made = {"train_labeled": noisy, "train_labeled_clean": clean, "oracle": oracle}
    return dict(base) | {k: _write_labels(df, folder / f"cell-{cell.name}-{k}.csv", tags) for k, df in made.items()}


def _digest(*parts: Any) -> str:
    """sha256 of files' bytes (Paths) and of JSON values (anything else), in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(part.name.encode() + b"\0" + part.read_bytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def code_fingerprint(*functions: Any) -> str:
    """What a result depends on: the package and training code (and the recipes and taxonomies), the torch
    version, the device, and the source of this file's ``functions`` (its table printing does not count)."""
    import torch

    from training.loop import resolve_device

    root = Path(__file__).resolve().parents[1]
    files = sorted(
        f
        for pattern in ("creative_qa/**/*.py", "creative_qa/**/*.yaml", "training/**/*.py", "training/**/*.yaml")
        for f in root.glob(pattern)
    )
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    for fn in functions:
        h.update(inspect.getsource(fn).encode())
    h.update(f"{torch.__version__} {resolve_device('auto').type}".encode())
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to a name
        np.savez(f, **arrays)


def grid_run(
    cell: Cell, arm: str, seed: int, cfg, keys: tuple[str, str], evaluator: Evaluator, results: Path
) -> dict[str, Any]:
    """One (cell, arm, seed): loaded when a result with the same training and evaluation keys is stored,
    re-evaluated from its checkpoint when only the evaluation changed, trained otherwise."""
    import mlflow
    from training.loop import train

    train_key, eval_key = keys
    stem = f"{arm}-s{seed}-{train_key[:12]}"
    path = results / cell.name / f"{stem}-{eval_key[:12]}.json"
    arrays = path.with_suffix(".npz")
    if path.is_file() and arrays.is_file():
        with np.load(arrays) as z:
            return json.loads(path.read_text()) | {"status": "loaded", "arrays": dict(z)}
    row: dict[str, Any] | None = None
    for old in sorted(path.parent.glob(f"{stem}-*.json")):
        prev = json.loads(old.read_text())
        if Path(prev["checkpoint"]).is_file():
            keep = ("run_id", "checkpoint", "val_mAP", "wall_s", "train_views", "forward_only_views")
            row = {k: prev.get(k) for k in keep} | {"status": "re-evaluated"}
            break
    if row is None:
        t = time.time()
        result = train(cfg)
        row = {
            "run_id": result.run_id,
            "checkpoint": str(result.checkpoint),
            "val_mAP": result.metrics.get("val_mAP"),
            "wall_s": time.time() - t,
            **result.passes,
            "status": "trained",
        }
    t = time.time()
    ev = evaluator(row["checkpoint"])
    probs, labels = ev.pop("probs"), ev.pop("labels")
    row = {"cell": cell.name, "arm": arm, "seed": seed, **row, **ev, "eval_s": time.time() - t}
    row |= {"train_key": train_key, "eval_key": eval_key}
    client = mlflow.MlflowClient()
    for s in GRID_EVAL:  # the run's own record of what the grid measured
        client.log_metric(row["run_id"], f"grid_{s}_mAP", row[f"{s}_mAP"])
    arr = {f"{s}_{kind}": v[s] for kind, v in (("probs", probs), ("labels", labels)) for s in probs}
    _atomic_write(arrays, lambda p: _savez(p, arr))
    _atomic_write(path, lambda p: p.write_text(json.dumps({k: v for k, v in row.items() if k != "status"}, indent=1)))
    return row | {"arrays": arr}


def rules_run(cell: Cell, base: dict[str, Path], data: dict[str, Path], tags: list[str]) -> dict[str, Any]:
    """The rule-checker arm: ``RuleChecker`` fitted on the cell's noisy labels, every split scored (the
    measurements are cached beside each manifest, so a rerun only fits and scores)."""
    import rules

    from creative_qa.manifest import label_matrix
    from training.metrics import macro_map, per_tag_ap

    t = time.time()
    workers = os.cpu_count() or 1
    _, x_base = rules.cached_features(base["train_labeled_clean"], workers)
    checker = rules.RuleChecker(tags).fit(pd.read_csv(data["train_labeled"]), x_base[: cell.n])
    row: dict[str, Any] = {"cell": cell.name, "arm": "rules", "seed": 0, "status": "computed"}
    for split in GRID_EVAL:
        df, x = rules.cached_features(data[split], workers)
        ap = per_tag_ap(checker.score(x), label_matrix(df, tags), tags)
        row[f"{split}_per_tag_AP"], row[f"{split}_mAP"] = ap, macro_map(ap)
        direct = per_tag_ap(np.nan_to_num(checker.score(x, direct=True)), label_matrix(df, tags), tags)
        row[f"{split}_per_tag_AP_direct"] = {k: v for k, v in direct.items() if k in rules.DIRECT}
    row["wall_s"] = time.time() - t
    return row


def _mean_sd(vals: list[float]) -> str:
    if not vals:
        return ""
    return f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def _mean_tag(rows: list[dict[str, Any]], split: str) -> dict[str, float]:
    """Per-tag AP on ``split``, the mean over the rows (seeds) that score the tag."""
    tags = dict.fromkeys(t for r in rows for t in r.get(f"{split}_per_tag_AP", {}))
    return {
        t: float(np.mean([r[f"{split}_per_tag_AP"][t] for r in rows if t in r[f"{split}_per_tag_AP"]])) for t in tags
    }


def auto_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``--recipe auto`` per seed, derived rather than retrained: auto trains exactly the floor and the default
    given the floor's estimated rates (``default_rates``; a grid measured before that arm: ``default``), on the
    same data, validation split, seed and budget, and keeps the higher validation mAP, so its result is
    ``training.auto.choose`` applied to the two stored runs of that seed; its wall time is both runs'."""
    from training.auto import choose

    floor = {r["seed"]: r for r in rows if r["arm"] == "floor"}
    arm = _default_arm(rows)
    default = {r["seed"]: r for r in rows if r["arm"] == arm}
    out = []
    for seed in sorted(floor.keys() & default.keys()):
        f, d = floor[seed], default[seed]
        pick, _ = choose({"supervised": f["val_mAP"], "default": d["val_mAP"]})
        src = d if pick == "default" else f
        out.append(src | {"arm": "auto", "status": f"chose {pick}", "wall_s": f["wall_s"] + d["wall_s"]})
    return out


def _default_arm(rows: list[dict[str, Any]]) -> str:
    """The arm auto's default candidate is: ``default_rates`` where the grid has it, else ``default``."""
    return "default_rates" if any(r["arm"] == "default_rates" for r in rows) else "default"


def rates_overrides(floor_row: dict[str, Any] | None) -> tuple[list[str], str]:
    """``default_rates``' overrides for one seed: the rates that seed's floor estimated, as ``auto`` gives them
    (``training.auto.estimated_rates``: none where the estimate rests on too few labels), and what they are."""
    from training.auto import estimated_rates

    if floor_row is None:
        raise SystemExit("the default_rates arm takes the floor's estimated rates: list floor before it in --arms")
    rates = estimated_rates(floor_row["checkpoint"])
    if rates is None:
        return [], "the recipe's rates (the floor's estimate rests on too few labels)"
    miss, fp = rates
    return [f"method.params.loss_params.miss_rate={miss}", f"method.params.loss_params.fp_rate={fp}"], (
        f"the floor's estimated rates {miss:.3f} / {fp:.3f}"
    )


def _interval(a: list[dict[str, Any]], b: list[dict[str, Any]], n_boot: int) -> dict[str, Any]:
    """Per split: mean-over-seeds mAP of ``a`` minus ``b`` and its paired bootstrap 95 % interval."""
    from training.metrics import macro_map, per_tag_ap

    k = min(len(a), len(b))
    a_, b_ = sorted(a, key=lambda r: r["seed"])[:k], sorted(b, key=lambda r: r["seed"])[:k]
    out = {}
    for split in GRID_SPLITS:  # not heldout: each interval takes about 40 s at full scale
        labels = a_[0]["arrays"][f"{split}_labels"]
        pa = [r["arrays"][f"{split}_probs"] for r in a_]
        pb = [r["arrays"][f"{split}_probs"] for r in b_]
        tags = [str(i) for i in range(labels.shape[1])]
        diff = float(np.mean([macro_map(per_tag_ap(x, labels, tags)) for x in pa]))
        diff -= float(np.mean([macro_map(per_tag_ap(x, labels, tags)) for x in pb]))
        lo, hi = paired_bootstrap(pa, pb, labels, n=n_boot)
        out[split] = {"diff": diff, "ci95": [lo, hi], "pairs": k}
    return out


def grid_cell_report(cell: Cell, rows: list[dict[str, Any]], n_boot: int) -> dict[str, Any]:
    """A cell's summary per arm (with ``auto`` derived from the floor and the default), the paired intervals of
    default minus floor and auto minus floor per split, the rule-checker's per-tag AP beside the platform's
    default's (``auto``, what runs without a recipe; the default recipe where there is no auto row) and where it
    wins, and that default's flags per split."""
    rows = rows + auto_rows(rows)
    out: dict[str, Any] = {
        "summary": [], "interval": {}, "interval_auto": {}, "rules": {}, "rules_wins": {}, "flags": {}
    }  # fmt: skip
    for arm in dict.fromkeys(r["arm"] for r in rows):
        rs = [r for r in rows if r["arm"] == arm]
        s: dict[str, Any] = {"cell": cell.name, "arm": arm, "seeds": len(rs)}
        for split in GRID_EVAL:
            vals = [r[f"{split}_mAP"] for r in rs if r.get(f"{split}_mAP") is not None]
            s[f"{split}_mAP"] = float(np.mean(vals)) if vals else None
            s[f"{split}_mAP_std"] = float(np.std(vals)) if len(vals) > 1 else None
            s[split] = _mean_sd(vals)
        s["wall_s"] = float(sum(r.get("wall_s") or 0.0 for r in rs))
        counts = {st: sum(r["status"] == st for r in rs) for st in dict.fromkeys(r["status"] for r in rs)}
        s["how"] = ", ".join(f"{k} {v}" for k, v in counts.items())
        out["summary"].append(s)
    by_arm = {a: [r for r in rows if r["arm"] == a] for a in (_default_arm(rows), "floor", "rules", "auto")}
    d, f = by_arm[_default_arm(rows)], by_arm["floor"]
    if d and f:
        out["interval"] = _interval(d, f, n_boot)
        out["interval_auto"] = _interval(by_arm["auto"], f, n_boot)
    d = by_arm["auto"] or d  # the platform's default: what runs without a recipe
    if by_arm["rules"]:
        r = by_arm["rules"][0]
        for split in GRID_EVAL:
            model = _mean_tag(d, split) if d else {}
            rules_ap = r[f"{split}_per_tag_AP"]
            out["rules"][split] = {t: {"rules": v, "default": model.get(t)} for t, v in rules_ap.items()}
            out["rules_wins"][split] = [t for t, v in rules_ap.items() if t in model and v > model[t]]
    for split in GRID_EVAL if d else ():
        out["flags"][split] = _mean_flags([r[f"{split}_flags"] for r in d])
    return out


def _mean_flags(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Flag figures per tag, the mean over seeds of those defined (NaN where no seed defines one)."""
    out: dict[str, dict[str, float]] = {}
    for t in dict.fromkeys(t for f in per_seed for t in f):
        vals = [f[t] for f in per_seed if t in f]
        out[t] = {}
        for k in vals[0]:
            v = [x[k] for x in vals if not np.isnan(x[k])]
            out[t][k] = float(np.mean(v)) if v else float("nan")
    return out


def print_grid(reports: dict[str, dict[str, Any]]) -> str:
    """The grid's tables as text: arms x cells x splits with the interval row per cell, then per cell the
    rule-checker's per-tag AP beside the default's, and the default's flag table."""
    lines: list[str] = []
    rows: list[dict[str, Any]] = []
    for name, rep in reports.items():
        rows += rep["summary"]
        for key, what in (("interval", "default - floor (95 % CI)"), ("interval_auto", "auto - floor (95 % CI)")):
            iv = rep.get(key)
            if iv:
                ci = {s: f"{iv[s]['diff']:+.3f} [{iv[s]['ci95'][0]:+.3f}, {iv[s]['ci95'][1]:+.3f}]" for s in iv}
                rows.append({"cell": name, "arm": what, "seeds": iv["test"]["pairs"], **ci})
    cols = ["cell", "arm", "seeds", *GRID_SPLITS, "wall_s", "how"]
    w = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in cols}
    lines.append("  ".join(f"{c:<{w[c]}}" for c in cols))
    for r in rows:
        lines.append("  ".join(f"{_cell(r.get(c)):<{w[c]}}" for c in cols))
    lines.append("(macro mAP, mean ± std over seeds; the interval: paired bootstrap over each split's creatives)")
    for name, rep in reports.items():
        if rep["rules"]:
            lines.append(f"\n{name}: per-tag AP, rule checker (fitted on the noisy labels) / auto (the default)")
            tags = list(dict.fromkeys(t for s in GRID_SPLITS for t in rep["rules"][s]))
            lines.append(f"{'tag':<16}" + "".join(f"{s:>22}" for s in GRID_SPLITS))
            for t in tags:
                cells = [rep["rules"][s].get(t) for s in GRID_SPLITS]
                lines.append(f"{t:<16}" + "".join(f"{_pair(c):>22}" for c in cells))
            for s in GRID_SPLITS:
                wins = [
                    f"{t} ({rep['rules'][s][t]['rules']:.3f} vs {rep['rules'][s][t]['default']:.3f})"
                    for t in rep["rules_wins"][s]
                ]
                default_there = any(v["default"] is not None for v in rep["rules"][s].values())
                said = ", ".join(wins) or "no tag" if default_there else "(no default arm in this run)"
                lines.append(f"{name} {s}: rules beat the default on: {said}")
        for s, flags in rep["flags"].items():
            lines.append(f"\n{name} {s}: auto's (the default's) flags at its own thresholds (mean over seeds)")
            keys = ("reliable", "threshold", "flagged", "true", "precision", "recall")
            lines.append(f"{'tag':<16}" + "".join(f"{k:>10}" for k in keys))
            for t, v in flags.items():
                lines.append(
                    f"{t:<16}"
                    + "".join(f"{v[k]:>10.3f}" if not np.isnan(v.get(k, np.nan)) else f"{'-':>10}" for k in keys)
                )
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):  # only wall_s is a bare number in the grid table
        return f"{v:.0f}"
    return "" if v is None else str(v)


def _pair(c: dict[str, float | None] | None) -> str:
    if c is None:
        return "-"
    return f"{c['rules']:.3f} / " + ("-" if c["default"] is None else f"{c['default']:.3f}")


def report_grid(stored: Path, n_boot: int, out: str | None) -> None:
    """The grid's tables from a stored ``--grid`` JSON: each row's arrays are read from the ``.npz`` stored beside
    its result (``<arm>-s<seed>-<train key>-<evaluation key>``), then reported as ``run_grid`` would."""
    run = json.loads(stored.read_text())
    results = Path(run["data"]["test"]).parent / "results"
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for row in run["rows"]:
        if row["arm"] != "rules":
            name = f"{row['arm']}-s{row['seed']}-{row['train_key'][:12]}-{row['eval_key'][:12]}.npz"
            with np.load(results / row["cell"] / name) as z:
                row = row | {"arrays": dict(z)}
        by_cell.setdefault(row["cell"], []).append(row)
    reports = {}
    for cell, rows in by_cell.items():
        reports[cell] = grid_cell_report(Cell.parse(cell), rows, n_boot)
        reports[cell]["label_noise"] = run["cells"].get(cell, {}).get("label_noise")
    text = print_grid(reports)
    print(text)
    path = write_json(out or "benchmarks/results/learning_grid_report.json", {"from": str(stored), "cells": reports})
    print(f"wrote {path}")


def run_grid(a: argparse.Namespace) -> None:
    import realphoto

    import mlflow
    from creative_qa.taxonomy import load_taxonomy
    from training import tracking
    from training.config import load_config
    from training.loop import cache_root

    t0 = time.time()
    quick = a.quick
    cells = [Cell.parse(c) for c in (a.cell or ",".join(QUICK_CELLS if quick else GRID_CELLS)).split(",")]
    wanted = list(GRID_ARMS) if a.arms == "all" else a.arms.split(",")
    unknown = set(wanted) - set(GRID_CHOICES)
    if unknown:
        raise SystemExit(f"unknown grid arms {sorted(unknown)}; choose from {', '.join(GRID_CHOICES)}")
    pool = a.unlabeled if a.unlabeled is not None else (40 if quick else GRID_POOL)
    test, heldout = (40, 30) if quick else (a.test, a.heldout)
    epochs, steps = (2, 3) if quick else (a.epochs, a.steps_per_epoch)
    seeds = a.seeds or (1 if quick else 3)
    rp_n = a.realphoto_n or (24 if quick else 1000)
    n_base = max(c.n for c in [*cells, *map(Cell.parse, QUICK_CELLS if quick else GRID_CELLS)])
    tags = load_taxonomy().tag_names

    bench = default_bench_dir(f"learning-grid-L{n_base}-U{pool}-T{test}-H{heldout}-s{a.data_seed}")
    base = make_grid_base(bench, n_base, pool, test, heldout, a.data_seed)
    base["realphoto"] = realphoto.build(bench / f"realphoto-{rp_n}", n=rp_n, seed=0, allow_fallback=quick)
    print(f"data ready in {time.time() - t0:.0f}s under {bench}", flush=True)

    common = [f"optim.epochs={epochs}", f"optim.steps_per_epoch={steps}", "data.test=null"]
    common += ["model.detail_side=128"] if quick else []
    common += a.set
    train_fp = code_fingerprint(arm_specs, cell_data, make_grid_base, synth_configs, grid_run)
    eval_fp = code_fingerprint(Evaluator, flag_stats, flag_policy_of)
    view_cache = cache_root(load_config("default"))
    shared: dict[tuple[str, str, str], Any] = {}
    exp = "bench-learning-grid"
    results = bench / "results"
    rows: list[dict[str, Any]] = []
    reports: dict[str, dict[str, Any]] = {}
    with mlflow.start_run(experiment_id=tracking.setup(exp), run_name="learning-grid") as parent:
        mlflow.log_params(
            {"cells": ",".join(c.name for c in cells), "arms": ",".join(wanted), "pool": pool, "epochs": epochs,
             "steps_per_epoch": steps, "seeds": seeds, "realphoto_n": rp_n, "data_seed": a.data_seed,
             "set": " ".join(a.set) or "none"}
        )  # fmt: skip
        for cell in cells:
            data = cell_data(base, cell, tags, a.data_seed)
            train_data = [data[k] for k in ("train_labeled", "train_labeled_clean", "oracle", "unlabeled")]
            eval_key = _digest(eval_fp, data["train_labeled"], data["unlabeled"], *(data[s] for s in GRID_EVAL))
            evaluator = Evaluator(data, tags, cell.rates, GRID_EVAL, shared, view_cache, every_split=True)
            specs = arm_specs(data, cell.rates, epochs, a.doubtful_top)
            cell_rows: list[dict[str, Any]] = []
            for arm in wanted:
                if arm == "rules":
                    print(f"--- {cell.name} / rules", flush=True)
                    cell_rows.append(rules_run(cell, base, data, tags))
                    continue
                recipe, overrides = specs[arm]
                for seed in range(seeds if a.all_seeds or arm in SEEDED else 1):
                    name = f"{cell.name}-{arm}-s{seed}"
                    if arm == "default_rates":
                        floors = {r["seed"]: r for r in cell_rows if r["arm"] == "floor"}
                        given, said = rates_overrides(floors.get(seed))
                        overrides = [*specs[arm][1], *given]
                        print(f"    {name}: {said}", flush=True)
                    cfg = load_config(
                        recipe, [*common, *overrides, f"seed={seed}", f"experiment={exp}", f"run_name={name}"]
                    )
                    cfg_key = {k: v for k, v in cfg.to_dict().items() if k not in NO_KEY}
                    keys = (_digest(cfg_key, train_fp, *train_data, bench / "bench.json"), eval_key)
                    print(f"--- {cell.name} / {arm} ({recipe}), seed {seed}", flush=True)
                    row = grid_run(cell, arm, seed, cfg, keys, evaluator, results)
                    print(
                        f"    {row['status']}: "
                        + ", ".join(f"{s} {row[f'{s}_mAP']:.3f}" for s in GRID_SPLITS)
                        + f" (train {row['wall_s']:.0f} s, evaluation {row.get('eval_s', 0):.0f} s)",
                        flush=True,
                    )
                    cell_rows.append(row)
            reports[cell.name] = grid_cell_report(cell, cell_rows, 100 if quick else a.bootstrap)
            reports[cell.name]["label_noise"] = label_noise_table(data, tags)
            rows += cell_rows
        text = print_grid(reports)
        print("\n" + text)
        status = {st: sum(r["status"] == st for r in rows) for st in ("trained", "re-evaluated", "loaded", "computed")}
        total = time.time() - t0
        print(f"\ngrid wall time {total:.0f} s; runs " + ", ".join(f"{k} {v}" for k, v in status.items()))
        for r in rows:
            r.pop("arrays", None)
        for rep in reports.values():
            for s in rep["summary"]:
                for split in GRID_EVAL:
                    if s[f"{split}_mAP"] is not None:
                        mlflow.log_metric(f"{split}_mAP.{s['cell']}.{s['arm']}", s[f"{split}_mAP"])
        out = write_json(
            a.out or "benchmarks/results/learning_grid.json",
            {
                "args": vars(a),
                "cells": reports,
                "rows": rows,
                "status": status,
                "wall_s": total,
                "data": {k: str(v) for k, v in base.items()},
                "parent_run_id": parent.info.run_id,
            },
        )
        mlflow.log_text(text, "grid.txt")
        mlflow.log_artifact(str(out))
        print(f"wrote {out}; MLflow parent run {parent.info.run_id}")


if __name__ == "__main__":
    main()
