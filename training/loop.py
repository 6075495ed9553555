"""The one training loop every method runs on.

forward + loss (the method's ``train_step``) -> backward -> clip -> step -> EMA/after-step
-> log; evaluation, threshold calibration, checkpoints every epoch and ``--resume``
around it. Every run is an MLflow run: the resolved config, the taxonomy, metrics
per epoch and the checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import mlflow
from creative_qa.paths import home
from creative_qa.preprocess import PreprocessSpec
from creative_qa.taxonomy import Taxonomy, load_taxonomy
from creative_qa.taxonomy_map import labels_for
from training import tracking
from training.config import TrainConfig
from training.data import CreativeDataset, load_manifest_dataset
from training.methods import get_method
from training.metrics import calibrate_thresholds, evaluate
from training.model import build_model
from training.warmstart import TaxonomyChange

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"


@dataclass
class TrainResult:
    run_id: str
    checkpoint: Path
    metrics: dict[str, float]
    thresholds: dict[str, float]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def spec_of(cfg: TrainConfig) -> PreprocessSpec:
    m = cfg.model
    return PreprocessSpec(input_size=m.input_size, crops=m.crops, detail_side=m.detail_side, crop_policy=m.crop_policy)


@torch.no_grad()
def predict(
    model: nn.Module, ds: CreativeDataset, device: torch.device, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``(N, T)`` and quality ``(N,)`` for a dataset."""
    was_training = model.training
    model.eval()
    probs, quality = [], []
    for i in range(0, len(ds), batch_size):
        tags, q = model(ds.views[i : i + batch_size].to(device))
        probs.append(torch.sigmoid(tags).float().cpu())
        quality.append(torch.sigmoid(q).float().cpu())
    model.train(was_training)
    if not probs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
    return torch.cat(probs).numpy(), torch.cat(quality).numpy()


def evaluate_dataset(
    model: nn.Module, ds: CreativeDataset, tags: list[str], device: torch.device, prefix: str
) -> tuple[dict[str, float], np.ndarray]:
    probs, quality = predict(model, ds, device)
    return evaluate(probs, quality, ds.labels.numpy(), ds.quality.numpy(), tags, prefix=prefix), probs


def split_val(ds: CreativeDataset, frac: float, seed: int) -> tuple[CreativeDataset, CreativeDataset]:
    n = len(ds)
    n_val = max(1, int(round(n * frac))) if n > 4 else 0
    perm = np.random.default_rng(seed).permutation(n)
    return ds.subset(np.sort(perm[n_val:])), ds.subset(np.sort(perm[:n_val]))


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up, then cosine decay to 5 % of the base rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _loader(ds: CreativeDataset, batch_size: int, shuffle: bool, seed: int, drop_last: bool) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=min(batch_size, max(1, len(ds))),
        shuffle=shuffle,
        generator=g,
        drop_last=drop_last and len(ds) > batch_size,
    )


def _forever(loader: DataLoader):
    """Endless batches, reshuffled on every pass (unlike itertools.cycle, which replays and hoards)."""
    while True:
        yield from loader


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _log_metrics(metrics: dict[str, float], step: int) -> None:
    clean = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    if clean:
        mlflow.log_metrics(clean, step=step)


class Trainer:
    """Holds what one run needs; ``fit`` runs it (resuming from a checkpoint if given)."""

    def __init__(self, cfg: TrainConfig, taxonomy: Taxonomy | None = None):
        self.cfg = cfg
        # A parent model and/or a taxonomy mapping (None without either); it may adopt the parent's model config.
        self.change = TaxonomyChange.create(cfg, taxonomy)
        self.taxonomy = self.change.taxonomy if self.change else (taxonomy or load_taxonomy(cfg.data.taxonomy))
        self.tags = self.taxonomy.tag_names
        self.spec = spec_of(cfg)
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

    # --- data -------------------------------------------------------------------------
    def labels_of(self, df):
        """A manifest's labels in this run's taxonomy (migrated when it is of the mapping's old one)."""
        return self.change.labels(df) if self.change else labels_for(df, self.taxonomy)

    def load_data(self) -> None:
        d = self.cfg.data
        if not d.labeled:
            raise ValueError(
                "no labeled data: set data.labeled (a manifest), e.g. after `creative-qa synth --out data/`"
            )
        labeled, rep = load_manifest_dataset(d.labeled, self.tags, self.spec, desc="labeled", labels_of=self.labels_of)
        self.skipped = list(rep.skipped)
        if d.val:
            self.train_ds = labeled
            self.val_ds, rep = load_manifest_dataset(d.val, self.tags, self.spec, desc="val", labels_of=self.labels_of)
            self.skipped += rep.skipped
        else:
            self.train_ds, self.val_ds = split_val(labeled, d.val_frac, self.cfg.seed)
        if len(self.train_ds) == 0:
            raise ValueError(f"{d.labeled}: no creative could be loaded ({len(self.skipped)} skipped)")
        self.unlabeled_ds = None
        if d.unlabeled and self.method_cls.uses_unlabeled:
            self.unlabeled_ds, rep = load_manifest_dataset(
                d.unlabeled, self.tags, self.spec, limit=d.max_unlabeled, desc="unlabeled"
            )
            self.skipped += rep.skipped
        self.test_ds = None
        if d.test:
            self.test_ds, rep = load_manifest_dataset(
                d.test, self.tags, self.spec, desc="test", labels_of=self.labels_of
            )
            self.skipped += rep.skipped

    # --- the run ----------------------------------------------------------------------
    def fit(self, resume: str | Path | None = None) -> TrainResult:
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.method_cls = get_method(cfg.method.name)
        self.load_data()
        if self.change:  # warm start from the parent (and its pseudo-labels for migrated blanks)
            model = self.change.build_model(cfg, self.train_ds, self.device).to(self.device)
        else:
            model = build_model(cfg.model, len(self.tags)).to(self.device)
        method = self.method_cls(model, quality_weight=cfg.optim.quality_weight, **cfg.method.params)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)

        # An epoch is one pass over the labeled set, or exactly `steps_per_epoch` steps (cycling the
        # data) when set: that is how arms with different amounts of labeled data get the same budget.
        steps_per_epoch = cfg.optim.steps_per_epoch or len(_loader(self.train_ds, cfg.optim.batch_size, True, 0, True))
        total = steps_per_epoch * cfg.optim.epochs
        start_epoch, step, run_id = 0, 0, None
        if resume:
            ckpt = torch.load(resume, map_location=self.device, weights_only=False)
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            method.load_state_dict(ckpt.get("method", {}))
            start_epoch, step, run_id = ckpt["epoch"] + 1, ckpt["step"], ckpt["run_id"]
            torch.set_rng_state(ckpt["torch_rng"])
            log.info("resuming run %s from epoch %d (step %d)", run_id, start_epoch, step)

        exp_id = tracking.setup(cfg.experiment)
        nested = mlflow.active_run() is not None  # e.g. a Noisy Student round under its parent run
        with mlflow.start_run(
            run_id=run_id, experiment_id=None if run_id else exp_id, run_name=cfg.run_name, nested=nested
        ) as run:
            run_id = run.info.run_id
            out_dir = Path(cfg.output_dir) if cfg.output_dir else home() / "runs" / run_id
            out_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                self._log_setup(len(self.train_ds), len(self.val_ds))
            metrics: dict[str, float] = {}
            val_probs: np.ndarray | None = None
            unl_iter = None
            if self.unlabeled_ds is not None and len(self.unlabeled_ds):
                unl_batch = cfg.optim.batch_size * getattr(method, "unlabeled_ratio", 1)
                unl_iter = _forever(_loader(self.unlabeled_ds, unl_batch, True, cfg.seed + 1, True))
            for epoch in range(start_epoch, cfg.optim.epochs):
                model.train()
                t0 = time.time()
                _log_metrics(method.on_epoch_start(epoch, self.train_ds, self.device), step)
                loader = _loader(self.train_ds, cfg.optim.batch_size, True, cfg.seed * 1000 + epoch, True)
                bar = tqdm(
                    islice(_forever(loader), steps_per_epoch),
                    total=steps_per_epoch,
                    desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                    unit="batch",
                    leave=False,
                )
                running: dict[str, float] = {}
                for batch in bar:
                    for g in opt.param_groups:
                        g["lr"] = lr_at(step, total, cfg.optim.warmup_steps, cfg.optim.lr)
                    unl = _to(next(unl_iter), self.device) if unl_iter is not None else None
                    loss, logs = method.train_step(_to(batch, self.device), unl, step)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite loss at step {step}: {logs}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                    opt.step()
                    method.after_step(step)
                    step += 1
                    logs = {"loss": float(loss.detach()), "grad_norm": float(grad_norm), **logs}
                    for k, v in logs.items():
                        running[k] = 0.9 * running.get(k, v) + 0.1 * v
                    bar.set_postfix(loss=f"{running['loss']:.3f}")
                    if step % 10 == 0:
                        _log_metrics(
                            {f"train_{k}": v for k, v in logs.items()} | {"lr": opt.param_groups[0]["lr"]}, step
                        )
                metrics, val_probs = evaluate_dataset(method.eval_model(), self.val_ds, self.tags, self.device, "val_")
                metrics["epoch_seconds"] = time.time() - t0
                _log_metrics(metrics | {"epoch": epoch + 1}, step)
                log.info(
                    "epoch %d/%d: val mAP %.3f, quality spearman %.3f (%.0fs)",
                    epoch + 1,
                    cfg.optim.epochs,
                    metrics.get("val_mAP", float("nan")),
                    metrics.get("val_quality_spearman", float("nan")),
                    metrics["epoch_seconds"],
                )
                ckpt_path = self._save(out_dir, model, opt, method, epoch, step, run_id, thresholds=None)
                mlflow.log_artifact(str(ckpt_path), artifact_path="checkpoints")

            # Thresholds are calibrated on validation and travel with the model.
            eval_model = method.eval_model()
            if val_probs is None:  # resumed after the last epoch: nothing was evaluated in this process
                metrics, val_probs = evaluate_dataset(eval_model, self.val_ds, self.tags, self.device, "val_")
            thresholds = calibrate_thresholds(
                val_probs, self.val_ds.labels.numpy(), self.tags, self.taxonomy.thresholds
            )
            if self.test_ds is not None and len(self.test_ds):
                test_metrics, _ = evaluate_dataset(eval_model, self.test_ds, self.tags, self.device, "test_")
                _log_metrics(test_metrics, step)
                metrics |= test_metrics
            mlflow.log_dict(thresholds, "thresholds.json")
            mlflow.log_metric("skipped_files", len(self.skipped))
            if self.skipped:
                mlflow.log_text("\n".join(f"{p}\t{r}" for p, r in self.skipped), "skipped_files.tsv")
            ckpt_path = self._save(out_dir, model, opt, method, cfg.optim.epochs - 1, step, run_id, thresholds)
            mlflow.log_artifact(str(ckpt_path), artifact_path="checkpoints")
        return TrainResult(run_id, ckpt_path, metrics, thresholds, self.skipped)

    def _log_setup(self, n_train: int, n_val: int) -> None:
        cfg = self.cfg
        mlflow.log_params({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in cfg.flat().items()})
        mlflow.log_params(
            {
                "n_train": n_train,
                "n_val": n_val,
                "taxonomy_version": self.taxonomy.version,
                "resolved_device": str(self.device),
                "n_skipped": len(self.skipped),
            }
        )
        mlflow.set_tags({"method": cfg.method.name, "backbone": cfg.model.backbone})
        mlflow.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
        mlflow.log_text(self.taxonomy.to_yaml(), "taxonomy.yaml")
        if self.change:
            self.change.log()

    def _save(
        self,
        out_dir: Path,
        model: nn.Module,
        opt,
        method,
        epoch: int,
        step: int,
        run_id: str,
        thresholds: dict[str, float] | None,
    ) -> Path:
        eval_model = method.eval_model()
        state = {
            "model": model.state_dict(),
            "eval_model": eval_model.state_dict() if eval_model is not model else None,
            "optimizer": opt.state_dict(),
            "method": method.state_dict(),
            "epoch": epoch,
            "step": step,
            "run_id": run_id,
            "torch_rng": torch.get_rng_state(),
            "config": self.cfg.to_dict(),
            "taxonomy": self.taxonomy.to_dict(),
            "preprocess": self.spec.to_dict(),
            "thresholds": thresholds,
        }
        path = out_dir / CHECKPOINT
        # Write-then-rename, so a run killed mid-save still has its previous checkpoint.
        with tempfile.NamedTemporaryFile(dir=out_dir, delete=False, suffix=".tmp") as f:
            torch.save(state, f)
        Path(f.name).replace(path)
        return path


def train(cfg: TrainConfig, resume: str | Path | None = None) -> TrainResult:
    """Train with ``cfg`` (see ``training/configs/``); returns the run id, checkpoint and metrics.

    A ``noisy_student`` recipe without a ``teacher`` runs its rounds (``training.rounds``).
    """
    if cfg.method.name == "noisy_student" and "rounds" in cfg.method.params and not resume:
        from training.rounds import noisy_student  # noqa: PLC0415

        return noisy_student(cfg)
    return Trainer(cfg).fit(resume)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
