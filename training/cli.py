"""The training-side commands of ``creative-qa``: train, export and the end-to-end demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from creative_qa.batch import score_manifest
from creative_qa.manifest import label_matrix, read_manifest
from creative_qa.paths import home
from creative_qa.scorer import Scorer
from training.auto import AUTO, RECORD, train_auto
from training.checkpoint import Checkpoint
from training.config import ConfigError, TrainConfig, absolute_paths, apply_overrides, build_config, load_config
from training.export import export_checkpoint
from training.loop import load_checkpoint, train
from training.metrics import macro_map, per_tag_ap
from training.model import config_of

log = logging.getLogger(__name__)


# Settings a resumed run may change: where and how it runs, not what it learns.
RESUME_FREE = {"device", "threads", "data.workers", "data.loader_workers", "data.cache", "optim.checkpoint_every"}


def resume_config(checkpoint: str, recipe: str | None, overrides: list[str]) -> TrainConfig:
    """The config a killed run was started with (from its checkpoint), with only ``RESUME_FREE`` overrides.

    Anything else would silently continue the same MLflow run as a different experiment: refused.
    """
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"--resume {checkpoint}: no such checkpoint (a run writes <output_dir>/last.pt)")
    if recipe:
        raise ConfigError("--resume takes the recipe and settings from the checkpoint; drop --recipe")
    # NOTE: the views are the checkpoint's spec's (config_of): a view field added since the run started has
    # today's default in the saved config read back, but the run keeps making the views it started with.
    cfg = config_of(Checkpoint.load(checkpoint, mmap=True))  # the config only: tensors stay mapped
    before = cfg.flat()
    data = apply_overrides(cfg.to_dict(), overrides)
    after = build_config(TrainConfig, data, "<resume overrides>").flat()
    changed = [k for k in after if after[k] != before.get(k) and k not in RESUME_FREE and k != "warm_start.parent"]
    if changed:
        diffs = ", ".join(f"{k}: {before.get(k)!r} -> {after[k]!r}" for k in changed)
        raise ConfigError(
            f"--resume continues the run as it was started; these would change it: {diffs}. Resume without "
            f"them (allowed: {', '.join(sorted(RESUME_FREE))}), or start a new run"
        )
    out = build_config(TrainConfig, data, "<resume>")
    out.warm_start.parent = cfg.warm_start.parent  # the version the run started from, even if an alias moved
    return out


def cmd_train(a: argparse.Namespace) -> None:
    flags = [
        f"{key}={value}"
        for key, value in (
            ("warm_start.parent", getattr(a, "parent", None)),
            ("data.taxonomy", getattr(a, "taxonomy", None)),
            ("data.mapping", getattr(a, "mapping", None)),
        )
        if value
    ]
    resume_auto = a.resume and (Path(a.resume) / RECORD).is_file()
    if a.resume and not resume_auto and Path(a.resume).is_dir():
        a.resume = str(Path(a.resume) / "last.pt")  # a run's output folder
    if resume_auto or (not a.resume and _wants_auto(a)):
        _train_auto(a, [*a.overrides, *flags], bool(resume_auto))
        return
    if a.budget is not None:
        raise ConfigError("--budget bounds --recipe auto (the default); a single recipe trains its epochs")
    if a.resume:
        cfg = resume_config(a.resume, a.recipe, [*a.overrides, *flags])
    else:
        cfg = absolute_paths(load_config(a.recipe or "default", [*a.overrides, *flags]))
    result = train(cfg, resume=a.resume)
    from training import distributed

    distributed.shutdown(distributed.from_env())
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    summary = {
        "run_id": result.run_id,
        "checkpoint": str(result.checkpoint),
        "metrics": {k: round(v, 4) for k, v in result.metrics.items() if "AP_" not in k},
        "skipped_files": len(result.skipped),
    }
    if cfg.warm_start.parent and not getattr(a, "no_register", False):
        summary["challenger"] = register_challenger(cfg, result.checkpoint)
    print(json.dumps(summary, indent=2))


def _wants_auto(a: argparse.Namespace) -> bool:
    """``--recipe auto``, or no recipe and no method named by an override (``method.name=X`` chooses X). Under
    torchrun, no recipe means ``default``: auto's candidates train one after another in one process."""
    if a.recipe is not None:
        return a.recipe == AUTO
    if any(o.split("=", 1)[0].strip() == "method.name" for o in a.overrides):
        return False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        log.warning("under torchrun, train without --recipe runs the default recipe (auto needs one process)")
        return False
    return True


def _train_auto(a: argparse.Namespace, overrides: list[str], resume: bool) -> None:
    """``--recipe auto``: the candidates of ``training.auto`` on the same data, the best on validation kept."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--recipe auto trains candidates one after another: under torchrun, name a recipe")
    if resume and (a.recipe or a.overrides):
        raise ConfigError("--resume of an auto run takes its settings from its auto.json; drop --recipe/overrides")
    r = train_auto(overrides, budget_s=a.budget, resume_dir=a.resume if resume else None)
    summary = {
        "recipe": AUTO,
        "chosen": r.chosen,
        "reason": r.reason,
        "run_id": r.result.run_id,
        "parent_run_id": r.parent_run_id,
        "checkpoint": str(r.checkpoint),
        "metrics": {k: round(v, 4) for k, v in r.result.metrics.items() if "AP_" not in k},
        "candidates": {
            k: {f: c[f] for f in ("run_id", "method", "val_mAP", "wall_s", "rates") if f in c}
            for k, c in r.candidates.items()
        },
        "wall_s": round(r.wall_s, 1),
    }
    cfg = build_config(TrainConfig, load_checkpoint(r.checkpoint).config, "<auto>", strict=False)
    if cfg.warm_start.parent and not getattr(a, "no_register", False):
        summary["challenger"] = register_challenger(cfg, r.checkpoint)
    print(json.dumps(summary, indent=2))


def register_challenger(cfg, checkpoint: Path) -> dict[str, str | None]:
    """Export a retrained model and register it as the ``challenger`` of its parent's registered model."""
    from mlflow.tracking import MlflowClient

    parent = cfg.warm_start.parent
    name = parent[len("models:/") :].split("@")[0].split("/")[0] if parent.startswith("models:/") else cfg.register_as
    exp = export_checkpoint(checkpoint, parity_source=cfg.data.test or cfg.data.labeled, name=name, alias="challenger")
    ckpt_tax = load_checkpoint(checkpoint).taxonomy
    client = MlflowClient()
    client.set_model_version_tag(name, exp.registered_version, "parent_model", parent)
    client.set_model_version_tag(name, exp.registered_version, "taxonomy_version", str(ckpt_tax["version"]))
    return {"uri": exp.model_uri, "version": exp.registered_version}


def cmd_export(a: argparse.Namespace) -> None:
    r = export_checkpoint(
        a.checkpoint, a.out, parity_source=a.parity, register=not a.no_register, name=a.name, alias=a.alias
    )
    print(
        json.dumps(
            {
                "onnx": str(r.onnx_path),
                "parity_max_abs_diff": r.parity_max_abs_diff,
                "registered": r.model_uri,
                "version": r.registered_version,
            },
            indent=2,
        )
    )


def cmd_label_issues(a: argparse.Namespace) -> None:
    from training.label_issues import find_label_issues, precision_at_k

    cfg = load_config(a.recipe, [f"data.labeled={a.labeled}", *a.overrides])
    issues = find_label_issues(cfg, folds=a.folds, baseline=a.self_confidence)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    issues.to_csv(out, index=False)
    summary = {"labels_judged": len(issues), "output": str(out), "top": issues.head(5).to_dict("records")}
    if a.clean:
        summary |= precision_at_k(issues, a.clean)
    if a.label_studio:
        summary["label_studio"] = _issues_to_label_studio(issues.head(a.ls_top), cfg, a)
    print(json.dumps(summary, indent=2))


def _issues_to_label_studio(top, cfg, a: argparse.Namespace) -> dict[str, str]:
    """A Label Studio project for rechecking the creatives of the ``top`` issues: each task says which of its
    labels are suspect (given, and the cross-validated prediction); nothing is pre-filled, so the annotator's
    answer is their own."""
    import pandas as pd

    from creative_qa.labelstudio import write_project
    from creative_qa.manifest import abspaths, read_manifest
    from creative_qa.taxonomy import load_taxonomy

    where = dict(zip(top["path"], abspaths(read_manifest(a.labeled), top["path"]), strict=True))
    rows = [
        {"abspath": where[path], "why": "recheck " + "; ".join(
            f"{r.tag} (given {int(r.given)}, predicted {r.predicted:.2f})" for r in group.itertuples())}
        for path, group in top.groupby("path", sort=False)
    ]  # fmt: skip
    root = a.ls_root or Path(a.labeled).parent
    taxonomy = load_taxonomy(cfg.data.taxonomy)
    try:
        files, videos = write_project(a.label_studio, pd.DataFrame(rows), taxonomy, root, prefill=1.01)
    except ValueError as e:
        raise SystemExit(f"creative-qa label-issues: {e}") from e
    said = {"document_root": str(Path(root).resolve()), "creatives": str(len(rows) - len(videos))}
    return {k: str(v) for k, v in files.items()} | said | ({"videos_left_out": str(len(videos))} if videos else {})


def _synth_demo_data(out: Path, n_labeled: int, n_unlabeled: int, n_test: int) -> dict[str, Path]:
    from creative_qa.synth import ANNOTATOR_NOISE, SYNTH_VERSION, generate_dataset

    marker = out / "synth.json"
    names = {"train_labeled": "train_labeled.csv", "test": "test.csv"}
    names |= {"unlabeled": "unlabeled.csv"} if n_unlabeled else {}
    if marker.is_file():
        meta = json.loads(marker.read_text())
        same = (meta.get("n_labeled"), meta.get("n_unlabeled"), meta.get("n_test")) == (n_labeled, n_unlabeled, n_test)
        same = same and all(meta.get(k) == v for k, v in ANNOTATOR_NOISE.items())
        same = same and meta.get("synth_version") == SYNTH_VERSION
        if same and all((out / f).is_file() for f in names.values()):
            log.info("reusing demo data in %s", out)
            return {k: out / f for k, f in names.items()}
    return generate_dataset(out, n_labeled=n_labeled, n_unlabeled=n_unlabeled, n_test=n_test, seed=0, **ANNOTATOR_NOISE)


def pair_ordering(df, quality: np.ndarray) -> tuple[int, int]:
    """(pairs where the clean original outscores its degraded copy, pairs scored)."""
    if "pair" not in df.columns:
        return 0, 0
    won = total = 0
    for _, g in df.assign(pred=quality).dropna(subset=["pair", "pred"]).groupby("pair"):
        if len(g) != 2:
            continue
        clean = g[g["path"].str.endswith("a.png")]["pred"]
        bad = g[g["path"].str.endswith("b.png")]["pred"]
        if len(clean) == 1 and len(bad) == 1:
            total += 1
            won += int(clean.iloc[0] > bad.iloc[0])
    return won, total


def cmd_demo(a: argparse.Namespace) -> None:
    t0 = time.time()
    out = Path(a.out) if a.out else home() / "demo"
    print(f"[1/5] synthesising {a.labeled} noisy-labeled, {a.unlabeled} unlabeled, {a.test} test creatives in {out}")
    paths = _synth_demo_data(out, a.labeled, a.unlabeled, a.test)
    t_synth = time.time() - t0

    # NOTE: the baseline gets the same data, budget and model overrides; only the method and the pool differ.
    shared = [f"data.labeled={paths['train_labeled']}", f"data.test={paths['test']}"]
    shared += [f"optim.epochs={a.epochs}"] if a.epochs else []
    pool = [f"data.unlabeled={paths['unlabeled']}"] if "unlabeled" in paths else []
    base = None
    if a.recipe == AUTO:
        cfg = load_config("default", [*shared, *pool, *a.overrides])
        print(
            f"[2/5] training --recipe auto: the default recipe ({cfg.method.name} on {a.labeled} labels"
            + (f" + {a.unlabeled} unlabeled" if pool else "")
            + f") and supervised training on the labels alone, {cfg.model.backbone}, {cfg.optim.epochs} epochs, "
            + f"{cfg.model.views} views of {cfg.model.input_size}px each; the higher validation mAP is kept"
        )
        auto = train_auto([*shared, *pool, *a.overrides])
        result, checkpoint = auto.results["default"], auto.checkpoint
        base, bcfg = auto.results.get("supervised"), load_config("demo")
        print(f"[3/5] chose {auto.chosen}: {auto.reason}")
    else:
        cfg = load_config(a.recipe, [*shared, *pool, *a.overrides])
        print(
            f"[2/5] training the {a.recipe!r} recipe: {cfg.method.name} on {a.labeled} labels"
            + (f" + {a.unlabeled} unlabeled" if pool else "")
            + f", {cfg.model.backbone}, {cfg.optim.epochs} epochs, "
            + f"{cfg.model.views} views of {cfg.model.input_size}px"
        )
        result = train(cfg)
        checkpoint = result.checkpoint
        if a.baseline:
            own = [o for o in a.overrides if not o.startswith(("method.", "data.unlabeled"))]
            bcfg = load_config(a.baseline, [*shared, *own])
            print(f"[3/5] for comparison: the {a.baseline!r} recipe ({bcfg.method.name}) on the {a.labeled} labels")
            base = train(bcfg)
    t_train = time.time() - t0 - t_synth

    print("[4/5] exporting to ONNX, checking parity, registering as champion")
    exp = export_checkpoint(checkpoint, parity_source=str(paths["test"]))

    print(f"[5/5] scoring the test split through {exp.model_uri}")
    scorer = Scorer(exp.model_uri)
    df = read_manifest(paths["test"])
    table, probs = score_manifest(scorer, df)
    labels = label_matrix(df, scorer.tags)
    ok = table["error"].isna().to_numpy()
    ap = per_tag_ap(probs[ok], labels[ok], scorer.tags)
    won, total = pair_ordering(df, table["quality"].to_numpy())

    print()
    print(f"{'creative':<26} {'quality':>7} {'pred':>6}  {'true defects':<36}  flags")
    shown = df.index[:10]
    defects = set(scorer.taxonomy.group("defect"))
    for i in shown:
        true = [t for j, t in enumerate(scorer.tags) if labels[i, j] == 1 and t in defects]
        flags = [f for f in str(table.loc[i, "flags"]).split(",") if f in defects]
        print(
            f"{df.loc[i, 'path']:<26} {df.loc[i, 'quality']:>7.2f} {table.loc[i, 'quality']:>6.2f}  "
            f"{', '.join(true) or '-':<36}  {', '.join(flags) or '-'}"
        )
    print()
    print("per-tag AP (test, ONNX): " + ", ".join(f"{t} {v:.2f}" for t, v in ap.items()))
    registered = auto.results[auto.chosen] if a.recipe == AUTO else result
    reg_map = registered.metrics.get("test_mAP", float("nan"))
    print(f"test macro mAP (ONNX scorer): {macro_map(ap):.3f}   (torch, in training: {reg_map:.3f})")
    if base is not None:
        torch_map, base_map = (r.metrics.get("test_mAP", float("nan")) for r in (result, base))
        what = "unlabeled data" if pool else "recipe vs baseline (no pool)"
        name, base_name = ("default", "supervised") if a.recipe == AUTO else (a.recipe, a.baseline)
        print(
            f"{what}: {name!r} ({cfg.method.name}) test mAP {torch_map:.3f} vs {base_name!r} "
            f"({bcfg.method.name}) on the labels alone "
            f"{base_map:.3f}: {torch_map - base_map:+.3f} (torch, same data, steps and model)"
        )
    pol = scorer.flag_policy
    print(
        f"flags: thresholds for precision {pol.target_precision:.2f} on validation, annotator rates "
        f"{pol.rates_source}: {pol.miss_rate:.0%} of positives missed, {pol.fp_rate:.0%} of negatives marked"
    )
    print(f"unreliable for this model, never flagged: {len(scorer.unreliable)} of {len(scorer.tags)} tags")
    for t, why in scorer.unreliable.items():
        print(f"  {t}: {why}")
    print(f"quality: clean original outscores its degraded copy in {won}/{total} pairs")
    print(f"ONNX parity: max |torch - onnx| = {exp.parity_max_abs_diff:.2e} on {exp.parity_images} creatives")
    print(f"registered: {exp.model_uri} (version {exp.registered_version}), MLflow run {registered.run_id}")
    print(f"time: synth {t_synth:.0f}s, train {t_train:.0f}s (both models), total {time.time() - t0:.0f}s")
    print(f"try: creative-qa score {df['abspath'].iloc[0]}   |   creative-qa serve")
