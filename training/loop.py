"""The one training loop every method runs on.

forward + loss (the method's ``train_step``) -> backward -> clip -> step -> EMA/after-step
-> log; evaluation, threshold calibration, checkpoints (every ``optim.checkpoint_every``
steps and every epoch) and ``--resume`` around it. Every run is an MLflow run: the
resolved config, the taxonomy, metrics per epoch and the checkpoint.

The data order is a pure function of (seed, epoch, step), so a run resumed from a
mid-epoch checkpoint continues the same batches, augmentations and MLflow run. Under
``torchrun`` the same loop runs data-parallel (``training.distributed``): each rank
takes its slice of every global batch; rank 0 alone logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import mlflow
from creative_qa.flags import FlagPolicy
from creative_qa.paths import home
from creative_qa.preprocess import PreprocessSpec
from creative_qa.taxonomy import Taxonomy, load_taxonomy
from creative_qa.taxonomy_map import labels_for
from training import distributed, tracking
from training.checkpoint import Checkpoint, capture_rng, restore_rng
from training.config import VIEW_FIELDS, TrainConfig
from training.data import (
    CreativeDataset,
    StreamBatches,
    epoch_batches,
    keep_batch,
    load_manifest_dataset,
    steps_in_epoch,
)
from training.flags import calibrate_flags
from training.methods import get_method
from training.metrics import evaluate
from training.model import build_model, init_tag_prior
from training.predict import forward_views
from training.refit import recipe_rates, refit_head
from training.result import TrainResult
from training.warmstart import TaxonomyChange, check_mix, choose_mix, pin_resumed_parent

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def spec_of(cfg: TrainConfig) -> PreprocessSpec:
    return PreprocessSpec(**{f: getattr(cfg.model, f) for f in VIEW_FIELDS})


def predict(
    model: nn.Module, ds: CreativeDataset, device: torch.device, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``(N, T)`` and quality ``(N,)`` for a dataset."""
    tags, quality = forward_views(model, ds.views, device, batch_size)
    return torch.sigmoid(tags).numpy(), torch.sigmoid(quality).numpy()


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


def _loader(ds: CreativeDataset, batches: list[np.ndarray] | StreamBatches, workers: int, seed: int) -> DataLoader:
    """Batches of ``ds`` in the given order (the dataset fetches each batch whole)."""
    return DataLoader(
        ds,
        batch_sampler=batches,
        collate_fn=keep_batch,
        num_workers=workers,
        # NOTE: an explicit generator, so starting an iterator never draws from the global RNG
        # (a resumed run would otherwise draw its augmentations from a shifted stream).
        generator=torch.Generator().manual_seed(seed),
        pin_memory=torch.cuda.is_available(),
    )


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _frame_bag(batch: dict[str, torch.Tensor], unlabeled: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
    """Pop the batch's frame bags (videos as several frames); ``None`` when it holds one row per creative.

    The model pools by row count, so should the unlabeled batch have exactly as many rows,
    the labeled batch drops one frame of its longest video to keep the two apart.
    """
    bag = batch.pop("bag", None)
    if bag is None or unlabeled is None or len(bag) != len(unlabeled["images"]):
        return bag
    counts = torch.bincount(bag)
    b = int(counts.argmax())
    last = int((bag == b).nonzero().max())
    keep = torch.arange(len(bag)) != last
    batch["images"], batch["crop_pool"] = batch["images"][keep], batch["crop_pool"][keep]
    return bag[keep]


def _log_metrics(metrics: dict[str, float], step: int) -> None:
    clean = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    if clean:
        mlflow.log_metrics(clean, step=step)


def cache_root(cfg: TrainConfig) -> Path | None:
    """Where the view cache lives (None: views decoded into RAM)."""
    c = cfg.data.cache
    if c in ("off", "none", "", None):
        return None
    return home() / "cache" if c == "auto" else Path(c).expanduser()


@dataclasses.dataclass
class _Run:
    """One fit's moving parts: what ``Trainer._setup`` builds, the position the epochs advance, where it writes."""

    model: nn.Module
    method: Any
    opt: torch.optim.Optimizer
    params: list[nn.Parameter]
    base_lr: float
    steps_per_epoch: int
    passes: tuple[int, int]  # the model's pass counter when the run started
    start_epoch: int = 0
    skip: int = 0  # batches of start_epoch already trained (a mid-epoch resume)
    step: int = 0
    run_id: str | None = None
    finished: bool = False  # resumed from the final save: any weight mix is in it already
    out_dir: Path = Path()
    log_metrics: Callable[[dict[str, float], int], None] = lambda m, s: None


class Trainer:
    """Holds what one run needs; ``fit`` runs it (resuming from a checkpoint if given)."""

    def __init__(self, cfg: TrainConfig, taxonomy: Taxonomy | None = None):
        self.cfg = cfg
        # A parent model and/or a taxonomy mapping (None without either); it may adopt the parent's model config.
        self.change = TaxonomyChange.create(cfg, taxonomy)
        self.taxonomy = self.change.taxonomy if self.change else (taxonomy or load_taxonomy(cfg.data.taxonomy))
        self.tags = self.taxonomy.tag_names
        self.spec = spec_of(cfg)
        self.dist = distributed.from_env()
        self.device = distributed.init(self.dist, resolve_device(cfg.device))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # bf16 autocast and channels-last pay off on tensor cores; on CPU they only slow things down.
        self.amp = cfg.amp and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.channels_last = cfg.channels_last and self.device.type == "cuda"

    # --- data -------------------------------------------------------------------------
    def _load(
        self, source: str, desc: str, pool: int = 0, limit: int | None = None, frames: int = 1, labeled: bool = True
    ) -> CreativeDataset:
        d, root = self.cfg.data, cache_root(self.cfg)
        args = (source, self.tags, self.spec, limit, desc, pool, root, d.workers, frames)
        labels_of = self.labels_of if labeled else None
        if root is not None and self.dist.enabled and not self.dist.is_main:
            distributed.barrier(self.dist)  # rank 0 builds the cache, the others then read it
        if root is None or self.dist.is_main:
            ds, rep = load_manifest_dataset(*args, labels_of=labels_of)
        if root is not None and self.dist.enabled and self.dist.is_main:
            distributed.barrier(self.dist)
        if root is not None and not self.dist.is_main:
            ds, rep = load_manifest_dataset(*args, labels_of=labels_of)
        self.skipped += rep.skipped
        return ds

    def labels_of(self, df):
        """A manifest's labels in this run's taxonomy (migrated when it is of the mapping's old one)."""
        return self.change.labels(df) if self.change else labels_for(df, self.taxonomy)

    def load_data(self) -> None:
        d = self.cfg.data
        if not d.labeled:
            raise ValueError(
                "no labeled data: set data.labeled (a manifest), e.g. after `creative-qa synth --out data/`"
            )
        self.skipped: list[tuple[str, str]] = []
        labeled = self._load(d.labeled, "labeled", pool=d.crop_pool, frames=d.video_frames)
        if d.val:
            self.train_ds = labeled
            self.val_ds = self._load(d.val, "val")
        else:
            self.train_ds, self.val_ds = split_val(labeled, d.val_frac, self.cfg.seed)
        if len(self.train_ds) == 0:
            raise ValueError(f"{d.labeled}: no creative could be loaded ({len(self.skipped)} skipped)")
        self.unlabeled_ds = None
        if d.unlabeled and self.method_cls.uses_unlabeled:
            self.unlabeled_ds = self._load(
                d.unlabeled, "unlabeled", pool=d.crop_pool, limit=d.max_unlabeled, labeled=False
            )
        self.test_ds = None
        if d.test:
            self.test_ds = self._load(d.test, "test")

    # --- the run ----------------------------------------------------------------------
    def fit(self, resume: str | Path | None = None) -> TrainResult:
        """Train (from ``resume``'s checkpoint if given): set up, the epochs, the final evaluation; one MLflow run."""
        run = self._setup(resume)
        dist = self.dist
        exp_id = tracking.setup(self.cfg.experiment) if dist.is_main else None
        nested = mlflow.active_run() is not None  # e.g. a Noisy Student round under its parent run
        run_ctx = (
            mlflow.start_run(
                run_id=run.run_id,
                experiment_id=None if run.run_id else exp_id,
                run_name=None if run.run_id else self.cfg.run_name or tracking.run_name(self.method_cls.name),
                nested=nested,
            )
            if dist.is_main
            else contextlib.nullcontext(None)
        )
        with run_ctx as mlrun:
            run.run_id = distributed.broadcast(mlrun.info.run_id if mlrun is not None else None, dist)
            run.out_dir = Path(self.cfg.output_dir) if self.cfg.output_dir else home() / "runs" / run.run_id
            if dist.is_main:
                run.out_dir.mkdir(parents=True, exist_ok=True)
                if not resume:
                    self._log_setup(len(self.train_ds), len(self.val_ds))
            run.log_metrics = _log_metrics if dist.is_main else (lambda m, s: None)
            metrics, val_probs = self._train_epochs(run)
            result = self._finish(run, metrics, val_probs)
        distributed.barrier(dist)
        return result

    def _setup(self, resume: str | Path | None) -> _Run:
        """Data, model, method and optimiser of the run, at the position ``resume``'s checkpoint left it."""
        cfg, dist = self.cfg, self.dist
        seed_everything(cfg.seed)  # the same on every rank: identical initial weights and EMA copies
        self.method_cls = get_method(cfg.method.name)
        self.load_data()
        if self.change:  # warm start from the parent (and its pseudo-labels for migrated blanks)
            model = self.change.build_model(cfg, self.train_ds, self.device).to(self.device)
        else:
            model = build_model(cfg.model, len(self.tags)).to(self.device)
            if cfg.model.prior_bias:
                init_tag_prior(model, self.train_ds.labels)
        # NOTE: a model built for this run: its pass counter started at zero here, and a warm start's copy
        # shares its parent's, which already counts the parent labelling the migrated blanks for this run.
        passes = (0, 0)
        if dist.enabled:
            model = distributed.convert_sync_batchnorm(model, self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        method = self.method_cls(model, quality_weight=cfg.optim.quality_weight, **cfg.method.params)
        method.tags, method.spec = list(self.tags), self.spec
        params = [*model.parameters(), *method.extra_parameters()]
        base_lr = cfg.optim.lr * (cfg.warm_start.lr_scale if self.change and self.change.parent else 1.0)
        opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=cfg.optim.weight_decay)
        # An epoch is one pass over the labeled set, or exactly `steps_per_epoch` steps (cycling the
        # data) when set: that is how arms with different amounts of labeled data get the same budget.
        per_epoch = cfg.optim.steps_per_epoch or steps_in_epoch(len(self.train_ds), cfg.optim.batch_size, dist.world)
        run = _Run(model, method, opt, params, base_lr, per_epoch, passes)
        rng_restored = False
        if resume:
            # NOTE: map_location per rank, or every rank's tensors land on the device rank 0 saved from.
            ckpt = Checkpoint.load(resume, map_location=self.device)
            started = PreprocessSpec.from_dict(ckpt.preprocess or {})
            if started != self.spec:
                now = self.spec.to_dict()
                changed = {k: (v, now[k]) for k, v in started.to_dict().items() if v != now[k]}
                raise ValueError(
                    f"{resume} was trained on other views than this config makes ({changed}, checkpoint -> config); "
                    f"`creative-qa train --resume {resume}` takes them from the checkpoint"
                )
            model.load_state_dict(ckpt.model)
            if ckpt.optimizer is not None:
                opt.load_state_dict(ckpt.optimizer)
            method.load_state_dict(ckpt.method)
            (run.start_epoch, run.skip), run.step, run.run_id = ckpt.resume_position(), ckpt.step, ckpt.run_id
            run.finished = ckpt.thresholds is not None  # its final save: any weight mix is in it already
            rngs = ckpt.rng if isinstance(ckpt.rng, list) else [ckpt.rng]
            if len(rngs) == dist.world:
                restore_rng(rngs[dist.rank])
                rng_restored = True
            log.info("resuming run %s at epoch %d, batch %d (step %d)", run.run_id, run.start_epoch, run.skip, run.step)
        if dist.enabled and not rng_restored:
            seed_everything(cfg.seed + 7919 * dist.rank + run.step)  # different augmentations and dropout per rank
        if dist.enabled:
            method.model = distributed.wrap(model, dist, self.device)  # all ranks start from rank 0's weights
        return run

    def _train_epochs(self, run: _Run) -> tuple[dict[str, float], np.ndarray | None]:
        """The epochs from the run's position: steps, logs, checkpoints, validation after each epoch.

        Returns the last epoch's validation metrics and probabilities (none when no epoch was left).
        """
        cfg, dist, method, model = self.cfg, self.dist, run.method, run.model
        bs, steps_per_epoch = cfg.optim.batch_size, run.steps_per_epoch
        total = steps_per_epoch * cfg.optim.epochs
        metrics: dict[str, float] = {}
        val_probs: np.ndarray | None = None
        unl_iter = None
        if self.unlabeled_ds is not None and len(self.unlabeled_ds):
            unl = StreamBatches(
                len(self.unlabeled_ds), bs * method.unlabeled_ratio, cfg.seed + 1, run.step, dist.world, dist.rank
            )
            unl_iter = iter(_loader(self.unlabeled_ds, unl, cfg.data.loader_workers, cfg.seed + 1))
        ckpt_every = cfg.optim.checkpoint_every
        for epoch in range(run.start_epoch, cfg.optim.epochs):
            model.train()
            t0 = time.time()
            first = run.skip if epoch == run.start_epoch else 0
            if first == 0:  # a mid-epoch resume got the method's epoch state back from its checkpoint
                run.log_metrics(method.on_epoch_start(epoch, self.train_ds, self.device, self.unlabeled_ds), run.step)
            batches = epoch_batches(len(self.train_ds), bs, steps_per_epoch, cfg.seed, epoch, dist.world, dist.rank)
            loader = _loader(self.train_ds, batches[first:], cfg.data.loader_workers, cfg.seed * 1000 + epoch)
            bar = tqdm(
                loader,
                initial=first,
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                unit="batch",
                leave=False,
                disable=not dist.is_main,
            )
            running: dict[str, float] = {}
            for i, batch in enumerate(bar, start=first):
                for g in run.opt.param_groups:
                    g["lr"] = lr_at(run.step, total, cfg.optim.warmup_steps, run.base_lr)
                unl = _to(next(unl_iter), self.device) if unl_iter is not None else None
                bag = _frame_bag(batch, unl)
                with (
                    torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp),
                    model.frame_bags(bag, len(batch["labels"]), cfg.data.frame_pooling),
                ):
                    loss, logs = method.train_step(_to(batch, self.device), unl, run.step)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at step {run.step}: {logs}")
                if dist.enabled:
                    loss = distributed.touch_all(loss, model)
                run.opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(run.params, cfg.optim.grad_clip)
                run.opt.step()
                method.after_step(run.step)
                run.step += 1
                logs = {"loss": float(loss.detach()), "grad_norm": float(grad_norm), **logs}
                for k, v in logs.items():
                    running[k] = 0.9 * running.get(k, v) + 0.1 * v
                bar.set_postfix(loss=f"{running['loss']:.3f}")
                if run.step % 10 == 0:
                    logs = distributed.mean_over_ranks(logs, dist)
                    lr = run.opt.param_groups[0]["lr"]
                    run.log_metrics({f"train_{k}": v for k, v in logs.items()} | {"lr": lr}, run.step)
                if ckpt_every and run.step % ckpt_every == 0 and i + 1 < steps_per_epoch:
                    self._save(run, epoch, None, epoch_step=i + 1)
            metrics, val_probs = evaluate_dataset(self._eval_net(method), self.val_ds, self.tags, self.device, "val_")
            metrics["epoch_seconds"] = time.time() - t0
            run.log_metrics(metrics | {"epoch": epoch + 1}, run.step)
            log.info(
                "epoch %d/%d: val mAP %.3f, quality spearman %.3f (%.0fs)",
                epoch + 1,
                cfg.optim.epochs,
                metrics.get("val_mAP", float("nan")),
                metrics.get("val_quality_spearman", float("nan")),
                metrics["epoch_seconds"],
            )
            ckpt_path = self._save(run, epoch, None)
            if dist.is_main:
                mlflow.log_artifact(str(ckpt_path), artifact_path="checkpoints")
        return metrics, val_probs

    def _finish(self, run: _Run, metrics: dict[str, float], val_probs: np.ndarray | None) -> TrainResult:
        """The final evaluation: the warm start's weight mix, the flag policy on validation, test; the last save."""
        eval_model = self._eval_net(run.method)
        if val_probs is None:  # resumed after the last epoch: nothing was evaluated in this process
            metrics, val_probs = evaluate_dataset(eval_model, self.val_ds, self.tags, self.device, "val_")
        if self.change and self.change.start_state is not None and not run.finished:
            metrics, val_probs = self._mix_with_start(eval_model, metrics, val_probs, run.log_metrics, run.step)
        if self.cfg.head.refit and not run.finished:  # a finished run's checkpoint holds its refitted head
            metrics, val_probs = self._refit_head(eval_model, run.method, metrics, run.log_metrics, run.step)
        # Thresholds are calibrated on validation and travel with the model.
        policy = self._calibrate_flags(val_probs)
        if self.test_ds is not None and len(self.test_ds):
            test_metrics, _ = evaluate_dataset(eval_model, self.test_ds, self.tags, self.device, "test_")
            run.log_metrics(test_metrics, run.step)
            metrics |= test_metrics
        passes = run.model.passes.since(run.passes)
        run.log_metrics({f"passes_{k}": float(v) for k, v in passes.items()}, run.step)
        if self.dist.is_main:
            mlflow.log_dict(policy.thresholds, "thresholds.json")
            mlflow.log_dict(policy.to_dict(), "flag_policy.json")
            mlflow.log_metric("skipped_files", len(self.skipped))
            if self.skipped:
                mlflow.log_text("\n".join(f"{p}\t{r}" for p, r in self.skipped), "skipped_files.tsv")
        ckpt_path = self._save(run, self.cfg.optim.epochs - 1, policy)
        if self.dist.is_main:
            mlflow.log_artifact(str(ckpt_path), artifact_path="checkpoints")
        metrics |= {f"passes_{k}": float(v) for k, v in passes.items()}
        return TrainResult(run.run_id, ckpt_path, metrics, policy.thresholds, self.skipped, passes)

    def _refit_head(self, net: nn.Module, method, metrics: dict, log_metrics, step: int):
        """``head.refit``: the tag head refitted on the labeled training split (``training.refit``), ``head.keep`` of
        the trained head kept on the tags ``method`` taught from the pool; the validation metrics and probabilities of
        the refitted model."""
        h = self.cfg.head
        if h.backbone_scale <= 0 or h.c <= 0 or h.max_rows < 1 or not 0 <= h.keep < 1:
            raise ValueError(f"head.backbone_scale, head.c and head.max_rows must be > 0, head.keep in [0, 1), got {h}")
        before = metrics.get("val_mAP", float("nan"))
        rates = recipe_rates(self.cfg.method.params)
        taught = set(method.taught_tags())
        kept = torch.tensor([t in taught for t in self.tags], dtype=torch.bool)
        report = refit_head(net, self.train_ds.views, self.train_ds.labels, self.device, net.backbone_width, h, rates,
                            self.cfg.seed, kept)  # fmt: skip
        metrics, val_probs = evaluate_dataset(net, self.val_ds, self.tags, self.device, "val_")
        log.info(
            "tag head refitted on %d labeled creatives (%d tags, %.1fs; %s): validation mAP %.3f -> %.3f",
            report.rows, report.tags, report.seconds,
            f"{h.keep:g} of the trained head kept on {', '.join(sorted(taught))}" if h.keep and taught else "none kept",
            before, metrics.get("val_mAP", float("nan")),
        )  # fmt: skip
        log_metrics(
            metrics | {"val_mAP_before_refit": before, "refit_loss_before": report.loss_before,
                       "refit_loss_after": report.loss_after, "refit_seconds": report.seconds},
            step,
        )  # fmt: skip
        return metrics | {"val_mAP_before_refit": before}, val_probs

    def _calibrate_flags(self, val_probs: np.ndarray) -> FlagPolicy:
        """The flag policy on validation (``training.flags``), its annotator rates logged as metrics."""
        f = self.cfg.flags
        given = (f.miss_rate, f.fp_rate)
        rates = None if None in given else given
        policy = calibrate_flags(
            val_probs, self.val_ds.labels.numpy(), self.tags, self.taxonomy.thresholds,
            f.target_precision, f.min_flagged, f.confidence, rates, seed=self.cfg.seed,
        )  # fmt: skip
        if self.dist.is_main:
            mlflow.log_metrics(
                {"annotator_miss_rate": policy.miss_rate, "annotator_fp_rate": policy.fp_rate,
                 "reliable_tags": float(sum(t.reliable for t in policy.tags.values()))}
            )  # fmt: skip
        if policy.unreliable:
            why = "; ".join(f"{t}: {r}" for t, r in policy.unreliable.items())
            log.info("tags never flagged by this model: %s", why)
        return policy

    def _mix_with_start(self, net: nn.Module, metrics: dict, val_probs: np.ndarray, log_metrics, step: int):
        """``warm_start.mix``: the candidate weight mix with the best validation mAP, loaded into ``net``."""
        alphas = check_mix(self.cfg.warm_start.mix)
        if alphas == [1.0]:
            return metrics, val_probs
        best, tried = choose_mix(
            net, self.change.start_state, alphas, (metrics, val_probs),
            lambda: evaluate_dataset(net, self.val_ds, self.tags, self.device, "val_"),
        )  # fmt: skip
        log.info(
            "weight mix with the warm start: alpha %g chosen (validation mAP %s)",
            best,
            ", ".join(f"{a:g}: {tried[a][0].get('val_mAP', float('nan')):.3f}" for a in alphas),
        )
        log_metrics({f"val_mAP_mix_{a:g}": tried[a][0].get("val_mAP", float("nan")) for a in alphas}, step)
        log_metrics(tried[best][0] | {"warm_mix": best}, step)  # the run's val_* now describe the mixed model
        return {**metrics, **tried[best][0], "warm_mix": best}, tried[best][1]

    @staticmethod
    def _eval_net(method) -> nn.Module:
        return distributed.unwrap(method.eval_model())

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
                "world_size": self.dist.world,
            }
        )
        mlflow.set_tags({"method": self.method_cls.name, "backbone": cfg.model.backbone})
        mlflow.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
        mlflow.log_text(self.taxonomy.to_yaml(), "taxonomy.yaml")
        if self.change:
            self.change.log()

    def _save(self, run: _Run, epoch: int, policy: FlagPolicy | None, epoch_step: int = 0) -> Path:
        """Rank 0 writes the checkpoint (with every rank's RNG state); returns its path on every rank."""
        path = run.out_dir / CHECKPOINT
        rngs = distributed.gather(capture_rng(), self.dist)
        if not self.dist.is_main:
            return path
        eval_model = self._eval_net(run.method)
        Checkpoint(
            config=self.cfg.to_dict(),
            taxonomy=self.taxonomy.to_dict(),
            preprocess=self.spec.to_dict(),
            model=run.model.state_dict(),
            eval_model=eval_model.state_dict() if eval_model is not run.model else None,
            optimizer=run.opt.state_dict(),
            method=run.method.state_dict(),
            epoch=epoch,
            epoch_step=epoch_step,
            epoch_done=epoch_step == 0,
            step=run.step,
            run_id=run.run_id,
            thresholds=policy.thresholds if policy else None,
            flags=policy.to_dict() if policy else None,
            rng=rngs,
        ).save(path)  # written then renamed: a run killed mid-save keeps its previous checkpoint
        return path


def train(cfg: TrainConfig, resume: str | Path | None = None) -> TrainResult:
    """Train with ``cfg`` (see ``training/configs/``); returns the run id, checkpoint and metrics.

    The method says what to run (``Method.stages``: one ordinary run, or several such as rounds or
    pretraining then fine-tuning); this function runs them. Several stages are nested under one MLflow
    parent run, which it owns; each stage is an ordinary run of the loop (or, when a stage names another
    staged method, that method's stages in turn). Returns the last stage's result, with the passes
    (``TrainResult.passes``) of every stage summed.
    """
    if resume and cfg.warm_start.parent:
        pin_resumed_parent(cfg, Checkpoint.load(resume, mmap=True).config)  # the config only: tensors stay mapped
    method_cls = get_method(cfg.method.name)
    if not method_cls.staged(cfg, resume):
        return _run_stages(method_cls, cfg, resume)
    with mlflow.start_run(
        experiment_id=tracking.setup(cfg.experiment),
        run_name=cfg.run_name or tracking.run_name(method_cls.name.replace("_", "-")),
        nested=mlflow.active_run() is not None,
    ) as parent:
        mlflow.set_tag("method", method_cls.name)
        result = _run_stages(method_cls, cfg, resume)
        mlflow.log_metrics({f"passes_{k}": float(v) for k, v in result.passes.items()})  # every stage's
        log.info("%s done: parent run %s, last stage %s", method_cls.name, parent.info.run_id, result.run_id)
        return result


def _run_stages(method_cls: type, cfg: TrainConfig, resume: str | Path | None) -> TrainResult:
    """Fit each ``Stage`` the method's generator yields, sending it the stage's result; the last result."""
    stages = method_cls.stages(cfg, resume)
    passes: dict[str, int] = {}
    stage = next(stages)
    while True:
        sub = get_method(stage.cfg.method.name)
        if sub is not method_cls and sub.staged(stage.cfg, stage.resume):
            result = train(stage.cfg, stage.resume)
        else:
            result = Trainer(stage.cfg).fit(stage.resume)
        passes = {k: passes.get(k, 0) + v for k, v in result.passes.items()}
        try:
            stage = stages.send(result)
        except StopIteration:
            # the last stage's result, with every stage's passes
            summed = {f"passes_{k}": float(v) for k, v in passes.items()}
            return dataclasses.replace(result, passes=passes, metrics={**result.metrics, **summed})


def load_checkpoint(path: str | Path) -> Checkpoint:
    return Checkpoint.load(path)
