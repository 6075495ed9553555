"""Rank the (creative, tag) labels most likely wrong, for human review.

Out-of-sample predictions come from K-fold cross-validation: each fold's model
never saw the labels it judges, so it cannot have memorised their mistakes. A known
label's issue score is ``|given - p|`` (1 - the model's confidence in the given
value); blanks are not judged. ``self_confidence`` is the simple baseline: one
model trained on all the noisy labels, scoring its own training data.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from creative_qa.manifest import label_matrix, read_manifest
from training.config import TrainConfig
from training.data import load_manifest_dataset
from training.loop import predict, resolve_device, spec_of, train
from training.model import model_from_checkpoint

log = logging.getLogger(__name__)


def issue_table(paths: list[str], labels: np.ndarray, probs: np.ndarray, tags: list[str]) -> pd.DataFrame:
    """One row per known label: path, tag, given, predicted, score; highest score first."""
    rows, cols = np.nonzero(~np.isnan(labels))
    given = labels[rows, cols]
    pred = probs[rows, cols]
    df = pd.DataFrame(
        {
            "path": [paths[i] for i in rows],
            "tag": [tags[j] for j in cols],
            "given": given.astype(int),
            "predicted": pred.round(4),
            "score": np.abs(given - pred).round(4),
        }
    )
    return df.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def _probs_for(ckpt: Path, manifest: Path, cfg: TrainConfig, tags: list[str]) -> tuple[list[str], np.ndarray]:
    ds, _ = load_manifest_dataset(str(manifest), tags, spec_of(cfg), desc="score fold")
    device = resolve_device(cfg.device)
    model = model_from_checkpoint(str(ckpt)).to(device)
    probs, _ = predict(model, ds, device)
    return ds.paths, probs


def find_label_issues(cfg: TrainConfig, folds: int = 3, baseline: bool = False) -> pd.DataFrame:
    """Cross-validated (or, with ``baseline``, in-sample) label-issue ranking for ``cfg.data.labeled``."""
    from creative_qa.taxonomy import load_taxonomy

    tags = load_taxonomy(cfg.data.taxonomy).tag_names
    df = read_manifest(cfg.data.labeled)
    df["path"] = df["abspath"]
    labels_by_path = dict(zip(df["abspath"], label_matrix(df, tags), strict=True))
    # NOTE: the folds' manifests and checkpoints are scratch (each fold's run is in MLflow): removed at the end.
    with tempfile.TemporaryDirectory(prefix="label-issues-") as tmp:
        got_paths, got_probs = _fold_probs(cfg, df, tags, Path(tmp), folds, baseline)
    probs = np.concatenate(got_probs) if got_probs else np.zeros((0, len(tags)))
    labels = np.stack([labels_by_path[p] for p in got_paths]) if got_paths else np.zeros((0, len(tags)))
    return issue_table(got_paths, labels, probs, tags)


def _fold_probs(
    cfg: TrainConfig, df: pd.DataFrame, tags: list[str], work: Path, folds: int, baseline: bool
) -> tuple[list[str], list[np.ndarray]]:
    """Each labeled creative's paths and probabilities from a model that did not train on it (or, with
    ``baseline``, from one that did)."""
    got_paths: list[str] = []
    got_probs: list[np.ndarray] = []
    if baseline:
        cfg_b = _fold_cfg(cfg, df, work / "all.csv", "self-confidence")
        result = train(cfg_b)
        p, pr = _probs_for(result.checkpoint, work / "all.csv", cfg_b, tags)
        got_paths, got_probs = p, [pr]
    else:
        order = np.random.default_rng(cfg.seed).permutation(len(df))
        for k, held in enumerate(np.array_split(order, folds)):
            train_df = df.drop(index=df.index[held])
            cfg_k = _fold_cfg(cfg, train_df, work / f"fold{k}_train.csv", f"label-issues-fold-{k}")
            result = train(cfg_k)
            held_csv = work / f"fold{k}_held.csv"
            df.iloc[held].drop(columns=["abspath"]).to_csv(held_csv, index=False)
            p, pr = _probs_for(result.checkpoint, held_csv, cfg_k, tags)
            got_paths += p
            got_probs.append(pr)
    return got_paths, got_probs


def _fold_cfg(cfg: TrainConfig, df: pd.DataFrame, csv: Path, name: str) -> TrainConfig:
    import copy

    df.drop(columns=["abspath"]).to_csv(csv, index=False)
    out = copy.deepcopy(cfg)
    out.data.labeled, out.data.test, out.run_name = str(csv), None, name
    out.output_dir = str(csv.with_suffix(""))
    return out


def precision_at_k(
    issues: pd.DataFrame,
    clean_manifest: str | Path,
    ks: tuple[int, ...] = (50, 100, 200),
    tags: list[str] | None = None,
) -> dict[str, float]:
    """Share of the top-k flagged labels that really are wrong, against a clean manifest."""
    clean = read_manifest(clean_manifest)
    tags = tags or sorted(issues["tag"].unique())
    truth = {
        (p, t): v
        for p, row in zip(clean["abspath"], label_matrix(clean, tags), strict=True)
        for t, v in zip(tags, row, strict=True)
    }
    wrong = np.array(
        [truth.get((p, t), g) != g for p, t, g in zip(issues["path"], issues["tag"], issues["given"], strict=True)]
    )
    out = {f"precision@{k}": float(wrong[:k].mean()) for k in ks if len(wrong) >= k}
    out["true_issues"] = float(wrong.sum())
    out["labels_judged"] = float(len(wrong))
    return out


__all__ = ["find_label_issues", "issue_table", "precision_at_k"]
