"""Retraining across a taxonomy change: the parent model, label migration, the new tag head, pseudo-labels.

``creative-qa train --from models:/creative-qa@champion --taxonomy v2.yaml --mapping v1_to_v2.yaml``
builds a ``TaxonomyChange`` for the run:

* the parent is resolved (registered model alias or version -> its MLflow run -> the
  checkpoint logged there; or a run, or a checkpoint file) and its model config adopted,
  since the weights only fit the same architecture;
* manifests of the parent's (old) taxonomy are migrated by the mapping's rules as they load;
* the new model takes the parent's backbone and quality head, and its tag head is built
  from the old one: kept and renamed rows copied, a merged tag's row fitted so its logit
  approximates the noisy-or of its sources, a split's children from their parent's row,
  added tags at the bias of their label prior with zero weights;
* blanks the migration created are filled from the parent where it is confident: a split's
  children are 0 where the parent is confidently 0; a merged tag is 0 where every source is
  confidently 0 and 1 where any source is confidently 1. Added tags are never pseudo-labelled
  (the old model knows nothing of them): they learn from their few labels, through the
  recipe's learning method.

Both taxonomies, the mapping and the parent model version are logged to the run.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

import mlflow
from creative_qa.taxonomy import Taxonomy, load_taxonomy, taxonomy_from_dict
from creative_qa.taxonomy_map import TaxonomyMapping, identity_mapping, labels_for, load_mapping
from training import tracking
from training.checkpoint import Checkpoint
from training.config import VIEW_FIELDS, TrainConfig
from training.data import CreativeDataset
from training.model import CreativeModel, build_model, config_of, model_from_checkpoint
from training.predict import forward_views

log = logging.getLogger(__name__)
CHECKPOINT_ARTIFACT = "checkpoints/last.pt"
_ARCH_FIELDS = ("backbone", "measures", *VIEW_FIELDS)


@dataclass
class Parent:
    """The model a run starts from."""

    uri: str
    ckpt: Checkpoint
    taxonomy: Taxonomy
    run_id: str | None = None
    registered_name: str | None = None
    version: str | None = None


def _read_checkpoint(uri: str, path: Path) -> Checkpoint:
    try:
        return Checkpoint.load(path)
    except (ValueError, TypeError, KeyError, RuntimeError, OSError) as e:
        raise ValueError(f"--from {uri}: {path} is not a creative-qa training checkpoint ({e})") from e


def resolve_parent(uri: str, experiment: str = "creative-qa") -> Parent:
    """``models:/name@alias``, ``models:/name/N``, ``runs:/<run id>`` or a checkpoint path -> its checkpoint."""
    name = version = run_id = None
    path = Path(uri)
    if not uri.startswith(("models:/", "runs:/")):
        if not path.is_file():
            raise FileNotFoundError(f"--from {uri}: no such checkpoint (or use models:/name@alias, runs:/<id>)")
        ckpt = _read_checkpoint(uri, path)
    else:
        tracking.setup(experiment)
        client = mlflow.MlflowClient()
        if uri.startswith("models:/"):
            ref = uri[len("models:/") :]
            try:
                if "@" in ref:
                    name, alias = ref.split("@", 1)
                    mv = client.get_model_version_by_alias(name, alias)
                else:
                    name, _, v = ref.partition("/")
                    mv = client.get_model_version(name, v)
            except mlflow.exceptions.MlflowException as e:
                raise ValueError(f"--from {uri}: not found in the model registry ({e.message})") from e
            version, run_id = str(mv.version), mv.run_id
            if not run_id:
                raise ValueError(f"--from {uri}: version {version} has no MLflow run to take a checkpoint from")
        else:
            run_id = uri[len("runs:/") :].strip("/").split("/")[0]
        # NOTE: the checkpoint is read whole into memory, so its downloaded copy goes with the folder.
        with tempfile.TemporaryDirectory(prefix="cqa-parent-") as dst:
            try:
                path = Path(
                    mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT, dst_path=dst)
                )
            except (mlflow.exceptions.MlflowException, OSError) as e:
                raise ValueError(f"--from {uri}: run {run_id} has no {CHECKPOINT_ARTIFACT} artifact ({e})") from e
            ckpt = _read_checkpoint(uri, path)
    taxonomy = taxonomy_from_dict(ckpt.taxonomy, f"<parent {uri}>")
    log.info("parent model %s: taxonomy v%s, run %s, version %s", uri, taxonomy.version, run_id, version)
    return Parent(uri, ckpt, taxonomy, run_id or ckpt.run_id, name, version)


def pin_resumed_parent(cfg: TrainConfig, saved_config: dict) -> None:
    """A resumed run starts from the parent its checkpoint names (an alias given again may have moved)."""
    saved = (saved_config.get("warm_start") or {}).get("parent")
    if cfg.warm_start.parent and saved and saved != cfg.warm_start.parent:
        log.info("resuming: parent %s, the version the run started from (given: %s)", saved, cfg.warm_start.parent)
        cfg.warm_start.parent = saved


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def noisy_or_logit(source_logits: np.ndarray) -> np.ndarray:
    """logit(1 - prod(1 - sigmoid(z_k))) for ``(N, K)`` logits, computed stably."""
    log_none = -np.logaddexp(0.0, source_logits).sum(axis=1)  # log prod(1 - p_k)
    log_any = np.log(-np.expm1(np.minimum(log_none, -1e-7)))
    return log_any - log_none


def fit_merge(source_logits: np.ndarray | None, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A merged tag's head row from its sources' rows ``w`` (K, F) and biases ``b`` (K,).

    With the parent's source logits on the training creatives, the row is the linear
    combination ``sum_k a_k (w_k . f + b_k) + c`` fitted by least squares to the noisy-or of
    the sources' probabilities (clipped to +-8). Without data: the mean row, bias at the
    log-sum-exp of the biases.
    """
    k = len(b)
    if source_logits is None or len(source_logits) < 4 * (k + 1):
        return w.mean(0), torch.logsumexp(b, 0)
    z = source_logits.astype(np.float64)
    target = np.clip(noisy_or_logit(z), -8.0, 8.0)
    x = np.concatenate([z, np.ones((len(z), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(x, target, rcond=None)
    a = torch.as_tensor(coef[:k], dtype=w.dtype)
    return a @ w, (a * b).sum() + float(coef[k])


@torch.no_grad()
def build_tag_head(
    mapping: TaxonomyMapping,
    old_w: torch.Tensor,
    old_b: torch.Tensor,
    prior: np.ndarray,
    old_logits: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The new tag head ``(T_new, F)``, ``(T_new,)`` from the old one, rule by rule (see module doc)."""
    idx = {t: j for j, t in enumerate(mapping.old.tag_names)}
    w = torch.zeros((len(mapping.new), old_w.shape[1]), dtype=old_w.dtype)
    b = torch.zeros(len(mapping.new), dtype=old_b.dtype)
    for j, r in enumerate(mapping.rules):
        src = [idx[s] for s in r.sources]
        if r.kind in ("keep", "rename"):
            w[j], b[j] = old_w[src[0]], old_b[src[0]]
        elif r.kind == "merge":
            w[j], b[j] = fit_merge(None if old_logits is None else old_logits[:, src], old_w[src], old_b[src])
        elif r.kind == "split":
            # Each child starts as its parent, with a prior share of its positives (1/k of them).
            k = sum(1 for q in mapping.rules if q.kind == "split" and q.sources == r.sources)
            w[j], b[j] = old_w[src[0]], old_b[src[0]] - math.log(k)
        else:  # add: the label prior, no evidence yet
            b[j] = _logit(float(prior[j]))
    return w, b


def label_prior(labels: np.ndarray, default: float = 0.1) -> np.ndarray:
    """Per-tag share of positives among known labels, smoothed (``default`` where nothing is known)."""
    known = ~np.isnan(labels)
    pos = np.nansum(labels, axis=0)
    n = known.sum(axis=0)
    return np.where(n > 0, (pos + default) / (n + 1.0), default)


def tag_logits(model: CreativeModel, views: torch.Tensor, device: torch.device, batch_size: int = 64) -> np.ndarray:
    return forward_views(model, views, device, batch_size)[0].numpy()


def warm_start_model(
    parent: CreativeModel, mapping: TaxonomyMapping, prior: np.ndarray, old_logits: np.ndarray | None = None
) -> CreativeModel:
    """A new model for ``mapping.new``: the parent's backbone and quality head, the tag head built from its own."""
    if parent.tag_head.out_features != len(mapping.old):
        raise ValueError(f"the parent has {parent.tag_head.out_features} tags, its taxonomy {len(mapping.old)}")
    model = copy.deepcopy(parent)
    model.tag_head = nn.Linear(parent.tag_head.in_features, len(mapping.new))
    w, b = build_tag_head(mapping, parent.tag_head.weight.cpu(), parent.tag_head.bias.cpu(), prior, old_logits)
    model.tag_head.weight.data.copy_(w)
    model.tag_head.bias.data.copy_(b)
    return model


def pseudo_labels(
    mapping: TaxonomyMapping, labels: np.ndarray, old_probs: np.ndarray, low: float = 0.1, high: float = 0.9
) -> tuple[np.ndarray, dict[str, int]]:
    """Fill the blanks of split children and merged tags where the parent is confident; returns labels, counts."""
    idx = {t: j for j, t in enumerate(mapping.old.tag_names)}
    out = labels.copy()
    counts: dict[str, int] = {}
    for j, r in enumerate(mapping.rules):
        blank = np.isnan(out[:, j])
        if r.kind == "split":
            zero = blank & (old_probs[:, idx[r.sources[0]]] <= low)
            out[zero, j] = 0.0
            counts[r.target] = int(zero.sum())
        elif r.kind == "merge":
            p = old_probs[:, [idx[s] for s in r.sources]]
            one = blank & (p >= high).any(axis=1)
            zero = blank & ~one & (p <= low).all(axis=1)
            out[one, j], out[zero, j] = 1.0, 0.0
            counts[r.target] = int(one.sum() + zero.sum())
    return out, counts


def check_distill(weight: float) -> None:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"warm_start.distill must be in [0, 1], got {weight}")


def distill_targets(mapping: TaxonomyMapping, labels: np.ndarray, old_probs: np.ndarray, weight: float) -> np.ndarray:
    """Soft targets on the carried-over tags: the labels blended with the parent's predictions.

    The parent learnt every carried-over tag (kept, renamed, merged) from the team's noisy labels;
    its prediction is a denoised copy of them and what the new model must not forget (Learning
    without Forgetting, as the source notes' recipe: the old model predicts the old tags on the
    data). A known label becomes ``(1 - weight) * label + weight * p``; a blank becomes ``p``
    (a merged tag's ``p`` is the noisy-or of its sources). Split children and added tags are
    untouched: the parent cannot say them. ``weight = 0`` returns the labels unchanged.
    """
    check_distill(weight)
    out = labels.copy()
    if weight == 0.0:
        return out
    idx = {t: j for j, t in enumerate(mapping.old.tag_names)}
    for j, r in enumerate(mapping.rules):
        if r.kind not in ("keep", "rename", "merge"):
            continue
        p = 1.0 - np.prod(1.0 - old_probs[:, [idx[s] for s in r.sources]], axis=1)
        col = out[:, j]
        out[:, j] = np.where(np.isnan(col), p, (1.0 - weight) * col + weight * p)
    return out


def check_mix(alphas: list[float]) -> list[float]:
    """The ``warm_start.mix`` candidates, each in [0, 1], largest first and without repeats."""
    if not isinstance(alphas, list | tuple) or not alphas:
        raise ValueError(f"warm_start.mix must be a non-empty list of numbers in [0, 1], got {alphas!r}")
    bad = [a for a in alphas if isinstance(a, bool) or not isinstance(a, int | float) or not 0.0 <= a <= 1.0]
    if bad:
        raise ValueError(f"warm_start.mix must be numbers in [0, 1], got {bad}")
    return sorted({float(a) for a in alphas}, reverse=True)


def choose_mix(
    net: nn.Module,
    start: dict[str, torch.Tensor],
    alphas: list[float],
    at_one: tuple[dict[str, float], Any],
    evaluate: Callable[[], tuple[dict[str, float], Any]],
) -> tuple[float, dict[float, tuple[dict[str, float], Any]]]:
    """The weight mix of ``net``'s trained weights with ``start`` with the best validation mAP, loaded into
    ``net``: ``(alpha, {alpha: evaluate() of that mix})``. ``at_one``: the evaluation of the trained weights."""
    final = {k: v.detach().clone() for k, v in net.state_dict().items()}
    tried = {1.0: at_one} if 1.0 in alphas else {}
    for a in alphas:
        if a not in tried:
            net.load_state_dict(mix_state(start, final, a))
            tried[a] = evaluate()
    best = max(alphas, key=lambda a: (tried[a][0].get("val_mAP", float("-inf")), a))
    net.load_state_dict(mix_state(start, final, best))
    return best, tried


@torch.no_grad()
def mix_state(start: dict[str, torch.Tensor], final: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """Weight-space ensemble (WiSE-FT, Wortsman et al. 2022): ``alpha * final + (1 - alpha) * start``.

    Every floating tensor is mixed (weights and BatchNorm statistics); counters stay as trained.
    A tag the parent could not say starts at zero weight, so its row only shrinks: its ranking
    comes from the mixed features (the thresholds are calibrated after the mix).
    """
    return {
        k: torch.lerp(start[k].to(v.device, v.dtype), v, alpha) if v.is_floating_point() else v
        for k, v in final.items()
    }


@dataclass
class TaxonomyChange:
    """What a run needs when it starts from a parent model and/or reads manifests of an older taxonomy."""

    taxonomy: Taxonomy
    mapping: TaxonomyMapping | None
    parent: Parent | None
    low: float = 0.1
    high: float = 0.9
    use_pseudo_labels: bool = True
    distill: float = 0.0
    pseudo_counts: dict[str, int] = field(default_factory=dict)
    start_state: dict[str, torch.Tensor] | None = None  # the warm-started weights, for warm_start.mix

    @classmethod
    def create(cls, cfg: TrainConfig, taxonomy: Taxonomy | None = None) -> TaxonomyChange | None:
        """``None`` when the run has neither a parent nor a mapping. Adopts the parent's model config."""
        ws = cfg.warm_start
        if not ws.parent and not cfg.data.mapping:
            return None
        parent = resolve_parent(ws.parent, cfg.experiment) if ws.parent else None
        if taxonomy is None and cfg.data.taxonomy:
            taxonomy = load_taxonomy(cfg.data.taxonomy)
        if cfg.data.mapping:  # the run's taxonomy is the mapping's new one unless given
            mapping = load_mapping(cfg.data.mapping, old=parent.taxonomy if parent else None, new=taxonomy)
            taxonomy = mapping.new
        elif taxonomy is None:  # a parent and nothing else: continue in its taxonomy
            taxonomy = parent.taxonomy
            mapping = identity_mapping(taxonomy)
        elif parent.taxonomy.tag_names == taxonomy.tag_names:
            mapping = identity_mapping(taxonomy)
        else:
            raise ValueError(
                f"the parent's taxonomy (v{parent.taxonomy.version}) differs from v{taxonomy.version}: give --mapping "
                "(`creative-qa taxonomy diff OLD NEW` proposes one)"
            )
        check_distill(ws.distill)  # before the parent predicts on the whole training set
        check_mix(ws.mix)
        if parent is not None and parent.version and parent.registered_name and "@" in ws.parent:
            # NOTE: the checkpoint's config names the version, so a resume cannot follow an alias that moved since.
            ws.parent = f"models:/{parent.registered_name}/{parent.version}"
        if parent is not None:
            pm = config_of(parent.ckpt).model
            changed = [f for f in _ARCH_FIELDS if getattr(cfg.model, f) != getattr(pm, f)]
            if changed:
                log.warning("using the parent's model config (%s differ from the recipe's)", ", ".join(changed))
            for f in _ARCH_FIELDS:
                setattr(cfg.model, f, getattr(pm, f))
            cfg.model.pretrained, cfg.model.weights = False, None  # the parent has the weights
        return cls(taxonomy, mapping, parent, ws.confident_low, ws.confident_high, ws.pseudo_labels, ws.distill)

    def labels(self, df: pd.DataFrame) -> np.ndarray:
        """A manifest's labels in the run's taxonomy (migrated if it is of the old one)."""
        return labels_for(df, self.taxonomy, self.mapping)

    def build_model(self, cfg: TrainConfig, train_ds: CreativeDataset, device: torch.device) -> CreativeModel:
        """The run's model: warm-started from the parent (and the training labels pseudo-labelled), or fresh."""
        if self.parent is None:
            return build_model(cfg.model, len(self.taxonomy))
        parent = model_from_checkpoint(self.parent.ckpt).to(device)
        old_logits = tag_logits(parent, train_ds.views, device)
        labels = train_ds.labels.numpy()
        model = warm_start_model(parent.cpu(), self.mapping, label_prior(labels), old_logits)
        old_probs = 1 / (1 + np.exp(-old_logits))
        if self.use_pseudo_labels:
            labels, self.pseudo_counts = pseudo_labels(self.mapping, labels, old_probs, self.low, self.high)
            log.info("pseudo-labels from the parent: %s", self.pseudo_counts)
        if self.distill:
            labels = distill_targets(self.mapping, labels, old_probs, self.distill)
            log.info("carried-over tags: targets blended with the parent's predictions (weight %g)", self.distill)
        train_ds.labels = torch.from_numpy(labels.astype(np.float32))
        self.start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return model

    def log(self) -> None:
        """Both taxonomies, the mapping and the parent model version, to the active MLflow run."""
        if self.mapping is not None:
            mlflow.log_text(self.mapping.old.to_yaml(), "parent_taxonomy.yaml")
            mlflow.log_text(self.mapping.to_yaml(), "taxonomy_mapping.yaml")
            mlflow.set_tag("taxonomy_change", f"v{self.mapping.old.version}->v{self.mapping.new.version}")
        if self.parent is not None:
            p = self.parent
            params = {"parent_model": p.uri, "parent_run_id": p.run_id, "parent_taxonomy_version": p.taxonomy.version}
            if p.version:
                params |= {"parent_model_name": p.registered_name, "parent_model_version": p.version}
            mlflow.log_params({k: v for k, v in params.items() if v is not None})
            mlflow.set_tag("parent_model_version", p.version or "")
        if self.pseudo_counts:
            mlflow.log_metrics({f"pseudo_labels_{t}": n for t, n in self.pseudo_counts.items()})
