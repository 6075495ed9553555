"""How much of the clean-label oracle the learning methods recover from few, noisy labels.

    python benchmarks/learning.py            # default scale: about an hour on 2 CPU cores
    python benchmarks/learning.py --quick    # a few minutes (what CI smoke-tests)

Data: synthetic creatives, fixed seed. 10 % of the pool is labeled with simulated
annotator noise (30 % of positives missed, 5 % false positives, 20 % of values
blank), 90 % is unlabeled; a clean test split, and a held-out split rendered with a
font and a blur kernel the training pool never uses.

Arms (same backbone, input size and number of optimiser steps): the floor (supervised
on the noisy 10 %), the oracle (supervised on the whole pool with clean labels), each
method alone, and the default recipe. Headline: gap closed = (recipe - floor) /
(oracle - floor) in test macro mAP. Every arm is an MLflow run under one parent run,
which also gets the table and a bar chart. Also measured: label-issue precision@k of
the cross-validated finder against the in-sample self-confidence baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_bench_dir, print_table, run_arm, synth_once, write_json  # noqa: E402

HELDOUT_FONT = "cmss10.ttf"
HELDOUT_BLUR = "motion"
ARMS = ("floor", "oracle", "supervised_asl", "mean_teacher", "fixmatch", "dividemix", "noisy_student", "default")


def make_data(out: Path, pool: int, test: int, heldout: int, seed: int, rates: dict[str, float]) -> dict[str, Path]:
    from creative_qa.synth import SynthConfig
    from creative_qa.synth.fonts import available_fonts

    fonts = tuple(Path(p).name for p in available_fonts() if Path(p).name != HELDOUT_FONT)
    train_cfg = SynthConfig(fonts=fonts, blur_kernels=("gaussian", "box"))
    held_cfg = SynthConfig(fonts=(HELDOUT_FONT,), blur_kernels=(HELDOUT_BLUR,))
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
    # The oracle sees the whole pool with clean labels.
    oracle = out / "oracle_clean.csv"
    pd.concat([pd.read_csv(paths["train_labeled_clean"]), pd.read_csv(paths["unlabeled_clean"])]).to_csv(
        oracle, index=False
    )
    paths["oracle"] = oracle
    return paths


def chart(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = [r["arm"] for r in rows]
    ax.bar(names, [r["test_mAP"] or 0 for r in rows], color="#4c72b0", label="test")
    ax.plot(names, [r.get("heldout_mAP") or 0 for r in rows], "o", color="#dd8452", label="held-out")
    ax.set_ylabel("macro mAP")
    ax.set_ylim(0, 1)
    ax.legend()
    plt.xticks(rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=4000, help="creatives in the training pool (10 %% labeled)")
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--heldout", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps-per-epoch", type=int, default=25)
    ap.add_argument("--miss-rate", type=float, default=0.3)
    ap.add_argument("--fp-rate", type=float, default=0.05)
    ap.add_argument("--blank-rate", type=float, default=0.2)
    ap.add_argument("--arms", default="all", help="comma-separated subset of: " + ",".join(ARMS))
    ap.add_argument("--rerun-default", action="store_true", help="train the default recipe even if an arm matches it")
    ap.add_argument("--label-issues", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--label-issue-epochs", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="tiny scale, minutes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/learning.json")
    a = ap.parse_args()
    if a.quick:
        a.pool, a.test, a.heldout, a.epochs, a.steps_per_epoch = 200, 40, 30, 2, 3

    import mlflow
    from training import tracking
    from training.config import load_config

    rates = {"miss_rate": a.miss_rate, "fp_rate": a.fp_rate, "blank_rate": a.blank_rate}
    t0 = time.time()
    data = make_data(default_bench_dir(f"learning-{a.pool}-{a.seed}"), a.pool, a.test, a.heldout, a.seed, rates)
    print(f"data ready in {time.time() - t0:.0f}s: {data['train_labeled']}")
    base_model = load_config("default").model
    common = [
        f"model.backbone={base_model.backbone}",
        f"model.input_size={base_model.input_size}",
        f"model.crops={base_model.crops}",
        f"model.detail_side={base_model.detail_side}",
        f"optim.epochs={a.epochs}",
        f"optim.steps_per_epoch={a.steps_per_epoch}",
        f"data.test={data['test']}",
        f"seed={a.seed}",
    ]
    if a.quick:
        common += ["model.backbone=test_resnet", "model.input_size=64", "model.detail_side=128"]
    labeled = [f"data.labeled={data['train_labeled']}"]
    unl = [*labeled, f"data.unlabeled={data['unlabeled']}"]
    supervised = ["method.name=supervised", "method.params={}"]
    # arm -> (recipe, overrides); every arm gets the same backbone, input and optimiser steps.
    arms: dict[str, tuple[str, list[str]]] = {
        "floor": ("default", [*labeled, *supervised]),
        "oracle": ("default", [f"data.labeled={data['oracle']}", *supervised]),
        "supervised_asl": ("supervised_asl", labeled),
        "mean_teacher": ("mean_teacher", unl),
        "fixmatch": ("fixmatch", unl),
        "dividemix": ("dividemix", unl),
        # two rounds (teacher, student) share the budget: half the epochs each
        "noisy_student": ("noisy_student", [*unl, f"optim.epochs={max(1, a.epochs // 2)}"]),
        "default": ("default", unl),
    }
    default_cfg = load_config("default")
    wanted = list(arms) if a.arms == "all" else a.arms.split(",")
    # The default recipe is one of the method arms with the same settings: don't train it twice.
    same_as = {"supervised": "floor"}.get(default_cfg.method.name, default_cfg.method.name)
    if "default" in wanted and same_as in wanted and same_as in arms and not a.rerun_default:
        wanted.remove("default")

    exp = "bench-learning"
    rows = []
    with mlflow.start_run(experiment_id=tracking.setup(exp), run_name=f"learning-{a.pool}") as parent:
        mlflow.log_params(
            {
                "pool": a.pool,
                "epochs": a.epochs,
                "steps_per_epoch": a.steps_per_epoch,
                **rates,
                "default_method": default_cfg.method.name,
            }
        )
        for name in wanted:
            recipe, overrides = arms[name]
            print(f"--- arm {name} ({recipe})", flush=True)
            row = run_arm(name, recipe, [*common, *overrides], exp)
            held = heldout_metrics(row["checkpoint"], data["heldout"])
            row["heldout_mAP"] = held["heldout_mAP"]
            row["heldout_per_tag_AP"] = {k[len("heldout_AP_") :]: v for k, v in held.items() if "_AP_" in k}
            mlflow.log_metric(f"heldout_mAP_{name}", row["heldout_mAP"])
            rows.append(row)
        by = {r["arm"]: r for r in rows}
        if "default" not in by and same_as in by:
            rows.append(by[same_as] | {"arm": "default", "same_as": same_as})
            by["default"] = rows[-1]
        gap = None
        if {"floor", "oracle", "default"} <= set(by):
            f, o, d = by["floor"]["test_mAP"], by["oracle"]["test_mAP"], by["default"]["test_mAP"]
            gap = (d - f) / (o - f) if o - f > 1e-9 else None
        print()
        print_table(
            rows, ["arm", "same_as", "test_mAP", "heldout_mAP", "test_detail_mAP", "test_quality_spearman", "wall_s"]
        )
        if gap is not None:
            print(f"gap closed by the default recipe ({default_cfg.method.name}): {gap:.3f}")
            mlflow.log_metric("gap_closed", gap)
        li = None
        if a.label_issues:
            li = label_issue_precision(
                data, [*common, f"optim.epochs={a.label_issue_epochs if not a.quick else 1}"], a.quick
            )
            print("label issues, precision@k vs clean labels:", li)
        for r in rows:
            mlflow.log_metric(f"test_mAP_{r['arm']}", r["test_mAP"])
        out = write_json(
            a.out,
            {"args": vars(a), "rows": rows, "gap_closed": gap, "label_issues": li, "parent_run_id": parent.info.run_id},
        )
        mlflow.log_artifact(str(out))
        mlflow.log_artifact(str(chart(rows, out.with_suffix(".png"))))
        print(f"wrote {out} (and {out.with_suffix('.png')}); MLflow parent run {parent.info.run_id}")


def heldout_metrics(checkpoint: str, manifest: Path) -> dict[str, float]:
    """An arm's final model on the held-out split (unseen font and blur kernel): mAP and per-tag AP."""
    from creative_qa.preprocess import PreprocessSpec
    from creative_qa.taxonomy import load_taxonomy
    from training.data import load_manifest_dataset
    from training.loop import evaluate_dataset, load_checkpoint, resolve_device
    from training.model import model_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    tags = load_taxonomy().tag_names
    ds, _ = load_manifest_dataset(str(manifest), tags, PreprocessSpec.from_dict(ckpt["preprocess"]), desc="heldout")
    device = resolve_device("auto")
    metrics, _ = evaluate_dataset(model_from_checkpoint(ckpt).to(device), ds, tags, device, "heldout_")
    return metrics


def label_issue_precision(data: dict[str, Path], common: list[str], quick: bool) -> dict[str, dict[str, float]]:
    from training.config import load_config
    from training.label_issues import find_label_issues, precision_at_k

    ks = (10, 25) if quick else (50, 100, 200)
    cfg = load_config(
        "default",
        [
            *common,
            f"data.labeled={data['train_labeled']}",
            "method.name=supervised",
            "method.params={}",
            "data.test=null",
        ],
    )
    out = {}
    for name, kwargs in (("cross_validated", {"folds": 3}), ("self_confidence", {"baseline": True})):
        issues = find_label_issues(cfg, **kwargs)
        out[name] = precision_at_k(issues, data["train_labeled_clean"], ks)
    return out


if __name__ == "__main__":
    main()
