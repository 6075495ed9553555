"""``--recipe auto`` (what ``creative-qa train`` runs without a recipe): choose per data set, on validation.

No fixed recipe wins everywhere (benchmarks/RESULTS.md, the regime grid): the pool and the noise
correction pay where labels are few and noisy and cost where they are many and clean, and a team
does not know in advance which regime it is in. So ``auto`` trains the candidates below on the
team's data with the same model, views, EMA and budget, and keeps the one with the higher
validation mAP (the noisy validation labels: both candidates are judged on the same ones, so the
noise is shared). Every candidate is an MLflow run nested under one ``auto`` parent run, which
records the choice and why; the chosen checkpoint is copied to ``<output_dir>/last.pt``.

Cost: the candidates' wall times add up (about 2x one recipe, the floor being the cheaper half);
``--budget SECONDS`` bounds it: the floor trains first, and the default only if its expected time
(the floor's x ``DEFAULT_COST``) still fits, otherwise the floor is kept and the output says so.

Annotator rates: the floor's flag policy estimates the annotators' miss and false-positive rates from its
validation predictions (``training.flags.estimate_annotator_rates``); the default, trained after it, gives
those to its forward-corrected loss in place of the recipe's constants, unless the team set
``method.params.loss_params`` itself. The parent run and the record say which rates it used.

A killed ``auto`` run resumes with ``creative-qa train --resume <output_dir>``: finished candidates
are read from ``auto.json``, an unfinished one resumes from its checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import mlflow
from creative_qa.paths import home
from training import tracking
from training.checkpoint import Checkpoint
from training.config import TrainConfig, absolute_paths, load_config
from training.loop import TrainResult, train
from training.model import adopt_checkpoint

log = logging.getLogger(__name__)

AUTO = "auto"
RECORD = "auto.json"
# name -> overrides of the default recipe. The floor first: it is cheaper and the safe choice.
CANDIDATES: dict[str, list[str]] = {
    # the labels alone (the fair floor): the pool is not read
    "supervised": ["method.name=supervised", "method.params={}", "data.unlabeled=null"],
    "default": [],  # the default recipe as shipped (training/configs/default.yaml)
}
RATES_FROM = "supervised"  # the candidate whose estimated annotator rates the others' forward correction takes
MIN_ANCHORS = 10  # ... when the estimate rests on at least this many positive and negative validation labels
DEFAULT_COST = 1.6  # the default's wall time over the floor's (benchmarks/RESULTS.md, regime grid, 2 CPU cores)
METRIC = "val_mAP"


@dataclass
class AutoResult:
    chosen: str
    result: TrainResult
    reason: str
    checkpoint: Path  # the chosen candidate's, copied to <output_dir>/last.pt
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> run_id, checkpoint, val_mAP, wall_s
    parent_run_id: str | None = None
    wall_s: float = 0.0
    results: dict[str, TrainResult] = field(default_factory=dict)  # every candidate trained or reloaded


def candidate_configs(overrides: list[str], output_dir: Path, run_name: str) -> dict[str, TrainConfig]:
    """Each candidate's config: the default recipe, its overrides, the user's, its own output folder and run name
    (``<run_name>-<candidate>``)."""
    out = {}
    for name, extra in CANDIDATES.items():
        cfg = absolute_paths(load_config("default", [*overrides, *extra]))
        cfg.output_dir = str(output_dir / name)
        cfg.run_name = f"{run_name}-{name}"
        out[name] = cfg
    return out


def choose(scores: dict[str, float]) -> tuple[str, str]:
    """The candidate with the highest validation mAP (the floor on a tie; NaN counts as lowest), and why."""
    best = max(scores, key=lambda k: (-np.inf if np.isnan(scores[k]) else scores[k], k == "supervised"))
    others = ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if k != best)
    return best, f"{best} has the highest validation mAP ({scores[best]:.3f}" + (f" vs {others})" if others else ")")


def estimated_rates(checkpoint: str | Path) -> tuple[float, float] | None:
    """The annotators' ``(miss, false-positive)`` rates a checkpoint's flag policy estimated on validation; None
    where it did not, or rests on fewer than ``MIN_ANCHORS`` positive or negative labels (too few to trust)."""
    from creative_qa.flags import FlagPolicy

    flags = Checkpoint.load(checkpoint, mmap=True).flags
    policy = FlagPolicy.from_dict(flags) if flags else None
    if policy is None or policy.rates_source != "estimated" or min(policy.anchors) < MIN_ANCHORS:
        return None
    return round(policy.miss_rate, 4), round(policy.fp_rate, 4)


def give_rates(cfg: TrainConfig, rates: tuple[float, float], overrides: list[str]) -> bool:
    """Set ``cfg``'s forward-corrected loss to ``rates``; not where the loss is another or the team's ``overrides``
    set the rates (or the method's params) themselves. Whether it did."""
    if cfg.method.params.get("loss") != "forward":
        return False
    if any(o.split("=", 1)[0].strip() in ("method.params", "method.params.loss_params") or
           o.startswith("method.params.loss_params.") for o in overrides):  # fmt: skip
        return False
    cfg.method.params["loss_params"] = {"miss_rate": rates[0], "fp_rate": rates[1]}
    return True


def train_auto(overrides: list[str], budget_s: float | None = None, resume_dir: str | Path | None = None) -> AutoResult:
    """Train the candidates on the same data and settings, keep the best on validation (see the module doc).

    ``overrides``' ``output_dir`` is where the candidates (``<output_dir>/<name>/``), the record and the
    chosen ``last.pt`` go (default ``<home>/runs/auto-<time>``); ``resume_dir``: continue the auto run
    recorded there.
    """
    t0 = time.time()
    if resume_dir is not None:
        out = Path(resume_dir).resolve()
        if not (out / RECORD).is_file():
            raise FileNotFoundError(f"--resume {out}: no {RECORD} there (an auto run writes it when it starts)")
        record = json.loads((out / RECORD).read_text())
        overrides, budget_s = record["overrides"], record["budget_s"]
    else:
        given = absolute_paths(load_config("default", overrides))
        name = given.run_name or tracking.run_name(AUTO)
        out = Path(given.output_dir) if given.output_dir else home() / "runs" / name
        record = {"overrides": overrides, "budget_s": budget_s, "run_name": name, "parent_run_id": None}
        record["candidates"] = {}
    record_path = out / RECORD
    cfgs = candidate_configs(overrides, out, record["run_name"])
    first = next(iter(cfgs.values()))
    out.mkdir(parents=True, exist_ok=True)
    exp_id = tracking.setup(first.experiment)
    results: dict[str, TrainResult] = {}
    with mlflow.start_run(
        run_id=record["parent_run_id"],
        experiment_id=None if record["parent_run_id"] else exp_id,
        run_name=None if record["parent_run_id"] else record["run_name"],
    ) as parent:
        record["parent_run_id"] = parent.info.run_id
        _save(record_path, record)
        mlflow.set_tag("creative_qa.recipe", AUTO)
        mlflow.log_params({"auto.candidates": ",".join(cfgs), "auto.budget_s": budget_s, "auto.metric": METRIC})
        skipped = ""
        for name, cfg in cfgs.items():
            done = record["candidates"].get(name)
            if done and done.get("finished"):
                results[name] = _reload(done)
                continue
            spent = sum(c.get("wall_s", 0.0) for c in record["candidates"].values())
            if budget_s is not None and results:
                expected = DEFAULT_COST * max(c.get("wall_s", 0.0) for c in record["candidates"].values())
                if spent + expected > budget_s:
                    skipped = f"{name} skipped: {expected:.0f} s expected, {budget_s - spent:.0f} s of the budget left"
                    log.warning("auto: %s", skipped)
                    break
            ckpt = Path(cfg.output_dir) / "last.pt"
            if ckpt.is_file():  # NOTE: resumed with the views (and measurements) it started with, not today's defaults
                adopt_checkpoint(cfg, Checkpoint.load(ckpt, mmap=True))
            rates = record.get("rates")
            if name != RATES_FROM and rates and give_rates(cfg, tuple(rates), overrides):
                log.info("auto: %s's forward correction takes the rates %s estimated: miss %.3f, false %.3f",
                         name, RATES_FROM, *rates)  # fmt: skip
                record["candidates"].setdefault(name, {})["rates"] = rates
            log.info("auto: training candidate %r (%s)", name, cfg.method.name)
            t = time.time()
            res = train(cfg, resume=ckpt if ckpt.is_file() else None)
            results[name] = res
            record["candidates"][name] = record["candidates"].get(name, {}) | {
                "run_id": res.run_id, "checkpoint": str(res.checkpoint), "method": cfg.method.name,
                METRIC: res.metrics.get(METRIC, float("nan")), "wall_s": time.time() - t, "finished": True,
            }  # fmt: skip
            if name == RATES_FROM:
                record["rates"] = estimated_rates(res.checkpoint)
                if record["rates"] is None:
                    log.info("auto: %s's rate estimate rests on too few validation labels: the recipe's rates stay",
                             RATES_FROM)  # fmt: skip
            _save(record_path, record)
        scores = {k: results[k].metrics.get(METRIC, float("-inf")) for k in results}
        chosen, reason = choose(scores)
        if skipped:
            reason += f"; {skipped}"
        given = [k for k, c in record["candidates"].items() if c.get("rates")]
        if given and record.get("rates"):
            miss, fp = record["rates"]
            reason += (f"; {', '.join(given)} corrected for the annotator rates {RATES_FROM} estimated "
                       f"({miss:.0%} of positives missed, {fp:.0%} of negatives marked)")  # fmt: skip
            mlflow.log_params({"auto.annotator_miss_rate": miss, "auto.annotator_fp_rate": fp})
        shutil.copyfile(results[chosen].checkpoint, out / "last.pt")
        record |= {"chosen": chosen, "reason": reason, "checkpoint": str(out / "last.pt")}
        _save(record_path, record)
        mlflow.log_params({"auto.chosen": chosen})
        mlflow.set_tag("creative_qa.auto_reason", reason)
        mlflow.log_metrics(
            {f"auto.{METRIC}.{k}": v for k, v in scores.items()}
            | {f"auto.wall_s.{k}": c["wall_s"] for k, c in record["candidates"].items() if "wall_s" in c}
        )
        mlflow.log_dict(record, RECORD)
    log.info("auto: chose %s: %s", chosen, reason)
    cands, parent_id = record["candidates"], record["parent_run_id"]
    return AutoResult(chosen, results[chosen], reason, out / "last.pt", cands, parent_id, time.time() - t0, results)


def _reload(done: dict[str, Any]) -> TrainResult:
    """A finished candidate as recorded (its metrics from MLflow)."""
    run = mlflow.get_run(done["run_id"])
    return TrainResult(done["run_id"], Path(done["checkpoint"]), dict(run.data.metrics), {})


def _save(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
