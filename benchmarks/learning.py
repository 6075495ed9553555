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

from common import DETAIL_TAGS, default_bench_dir, made_once, print_table, synth_once, write_json  # noqa: E402

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


def make_data(out: Path, pool: int, test: int, heldout: int, seed: int, rates: dict[str, float]) -> dict[str, Path]:
    from foreign import FOREIGN_BACKGROUND, FOREIGN_FONT, make_foreign

    from creative_qa.synth import SynthConfig
    from creative_qa.synth.fonts import available_fonts
    from creative_qa.synth.render import BACKGROUNDS

    fonts = tuple(Path(p).name for p in available_fonts() if Path(p).name not in (HELDOUT_FONT, FOREIGN_FONT))
    backgrounds = tuple(b for b in BACKGROUNDS if b != FOREIGN_BACKGROUND)
    train_cfg = SynthConfig(fonts=fonts, blur_kernels=("gaussian", "box"), backgrounds=backgrounds)
    held_cfg = SynthConfig(fonts=(HELDOUT_FONT,), blur_kernels=(HELDOUT_BLUR,), backgrounds=backgrounds)
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
    """Loads each evaluation split once and scores every arm's final model on all of them."""

    def __init__(self, data: dict[str, Path], tags: list[str], rates: dict[str, float]):
        self.data, self.tags, self.rates = data, tags, rates
        self.cache: dict[tuple[str, str], Any] = {}
        self.labeled = pd.read_csv(data["train_labeled"])

    def dataset(self, split: str, spec):
        from training.data import load_manifest_dataset

        key = (split, str(spec))
        if key not in self.cache:
            self.cache[key], _ = load_manifest_dataset(str(self.data[split]), self.tags, spec, desc=split)
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
        out: dict[str, Any] = {"probs": {}}
        for split in EVAL_SPLITS:
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
                out["test_flag_F1"] = flag_f1(probs, labels, self.tags, ckpt.thresholds or {})["flag_F1"]
                out["test_flag_F1_prior"] = flag_f1(probs, labels, self.tags, prior_thr)["flag_F1"]
                out["probs"][split] = probs
        return out


def run_arm(name: str, recipe: str, overrides: list[str], experiment: str, evaluator: Evaluator) -> dict[str, Any]:
    from training.config import load_config
    from training.loop import train
    from training.model import PASSES

    cfg = load_config(recipe, [*overrides, f"experiment={experiment}", f"run_name={name}"])
    t, passes = time.time(), PASSES.snapshot()
    result = train(cfg)
    row = {
        "arm": name,
        "seed": cfg.seed,
        "run_id": result.run_id,
        "checkpoint": str(result.checkpoint),
        "val_mAP": result.metrics.get("val_mAP"),
        "wall_s": time.time() - t,
        **PASSES.since(passes),
    }
    return row | evaluator(row["checkpoint"])


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
    ap.add_argument("--seeds", type=int, default=3, help="training seeds for floor, clean_labeled, oracle, default")
    ap.add_argument("--all-seeds", action="store_true", help="every arm runs --seeds seeds, not only those four")
    ap.add_argument("--miss-rate", type=float, default=ANNOTATOR_NOISE["miss_rate"])
    ap.add_argument("--fp-rate", type=float, default=ANNOTATOR_NOISE["fp_rate"])
    ap.add_argument("--blank-rate", type=float, default=ANNOTATOR_NOISE["blank_rate"])
    ap.add_argument("--arms", default="all", help="comma-separated subset of: " + ",".join(ARMS))
    ap.add_argument("--label-issues", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--label-issue-epochs", type=int, default=10)
    ap.add_argument("--doubtful-top", type=int, default=200, help="labels synthesis_doubtful blanks")
    ap.add_argument("--quick", action="store_true", help="tiny scale, minutes")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/learning.json")
    a = ap.parse_args()
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
    labeled = [f"data.labeled={data['train_labeled']}"]
    unl = [*labeled, f"data.unlabeled={data['unlabeled']}"]
    supervised = ["method.name=supervised", "method.params={}"]
    loss_rates = [f"method.params.loss_params.{k}={getattr(a, k)}" for k in ("miss_rate", "fp_rate")]
    # arm -> (recipe, overrides); the shared defaults give every arm the same backbone, input, view and EMA.
    arms: dict[str, tuple[str, list[str]]] = {
        "floor": ("default", [*labeled, *supervised]),
        "clean_labeled": ("default", [f"data.labeled={data['train_labeled_clean']}", *supervised]),
        "oracle": ("default", [f"data.labeled={data['oracle']}", *supervised]),
        "supervised_asl": ("supervised_asl", labeled),
        "large_loss": ("large_loss", labeled),
        "mean_teacher": ("mean_teacher", unl),
        "fixmatch": ("fixmatch", unl),
        "cap": ("cap", [*unl, f"method.params.miss_rate={a.miss_rate}", f"method.params.fp_rate={a.fp_rate}"]),
        "dividemix": ("dividemix", unl),
        # two rounds (teacher, student) share the budget: half the epochs each
        "noisy_student": ("noisy_student", [*unl, f"optim.epochs={max(1, a.epochs // 2)}"]),
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
            [*unl, *loss_rates, f"method.params.doubtful_top={a.doubtful_top}"],
        ),
        "default": ("default", unl),
    }
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


if __name__ == "__main__":
    main()
