"""Champion and challenger: promote a retrained model only if no shared tag gets worse.

``creative-qa promote --eval test_v2.csv`` scores a labeled evaluation manifest with
``models:/creative-qa@champion`` and ``@challenger`` (their ONNX files, through the same
``Scorer`` serving uses), compares average precision tag by tag on the tags the two
share through the taxonomy mapping (kept and renamed tags; a merged tag is scored for the
champion as the noisy-or of its sources), and moves ``champion`` to the challenger only if
no shared tag drops by more than ``--tolerance``. ``--force`` promotes anyway and records
that (and the regressions) as model-version tags. The table is printed either way; a
server that resolves ``models:/creative-qa@champion`` picks the new version up on its
next load.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from mlflow.tracking import MlflowClient

import mlflow
from creative_qa.batch import score_manifest
from creative_qa.manifest import read_manifest
from creative_qa.scorer import Scorer
from creative_qa.taxonomy import Taxonomy
from creative_qa.taxonomy_map import (
    TaxonomyMapping,
    identity_mapping,
    labels_for,
    load_mapping,
    mapping_from_dict,
)
from training import tracking
from training.metrics import per_tag_ap

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass
class TagRow:
    tag: str
    kind: str  # keep | rename | merge | split | add
    champion_ap: float | None
    challenger_ap: float | None
    verdict: str  # ok | regression | new | n/a

    @property
    def delta(self) -> float | None:
        if self.champion_ap is None or self.challenger_ap is None:
            return None
        return self.challenger_ap - self.champion_ap


@dataclass
class Promotion:
    promoted: bool
    forced: bool
    champion_version: str | None
    challenger_version: str
    rows: list[TagRow] = field(default_factory=list)

    @property
    def regressions(self) -> list[TagRow]:
        return [r for r in self.rows if r.verdict == "regression"]

    def table(self) -> str:
        lines = [f"{'tag':<22} {'kind':<7} {'champion':>9} {'challenger':>10} {'delta':>7}  verdict"]
        for r in self.rows:

            def f(v: float | None) -> str:
                return "-" if v is None else f"{v:.3f}"

            d = "-" if r.delta is None else f"{r.delta:+.3f}"
            lines.append(f"{r.tag:<22} {r.kind:<7} {f(r.champion_ap):>9} {f(r.challenger_ap):>10} {d:>7}  {r.verdict}")
        return "\n".join(lines)


def compare(
    champion_probs: np.ndarray | None,
    challenger_probs: np.ndarray,
    labels: np.ndarray,
    mapping: TaxonomyMapping,
    tolerance: float,
) -> list[TagRow]:
    """Per-tag AP of both models on the challenger's tags; shared tags are judged against ``tolerance``.

    ``champion_probs`` are in the mapping's old taxonomy, ``challenger_probs`` and ``labels`` in the new one.
    """
    new_tags = mapping.new.tag_names
    chall_ap = per_tag_ap(challenger_probs, labels, new_tags)
    champ_ap: dict[str, float] = {}
    shared = mapping.shared()
    if champion_probs is not None:
        idx = {t: j for j, t in enumerate(mapping.old.tag_names)}
        names = [t for t in new_tags if t in shared]
        # One source: the champion's own probability; a merge: the noisy-or of its sources'.
        mapped = [1.0 - np.prod(1.0 - champion_probs[:, [idx[s] for s in shared[t]]], axis=1) for t in names]
        cols = [new_tags.index(t) for t in names]
        if names:
            champ_ap = per_tag_ap(np.stack(mapped, axis=1), labels[:, cols], names)
    rows = []
    for t in new_tags:
        kind = mapping.rule(t).kind
        a, b = champ_ap.get(t), chall_ap.get(t)
        if t not in shared or champion_probs is None:
            verdict = "new" if b is not None else "n/a"
        elif a is None or b is None:
            verdict = "n/a"  # no positives (or no known labels) in the evaluation set
        else:
            verdict = "regression" if b - a < -tolerance else "ok"
        rows.append(TagRow(t, kind, a, b, verdict))
    return rows


def _scores(uri: str, df) -> tuple[np.ndarray, Taxonomy]:
    scorer = Scorer(uri)
    return score_manifest(scorer, df)[1], scorer.taxonomy


def _mapping_for(
    client: MlflowClient, challenger, champ_tax: Taxonomy, chall_tax: Taxonomy, path: str | None
) -> TaxonomyMapping:
    if path:
        return load_mapping(path, old=champ_tax, new=chall_tax)
    if champ_tax.tag_names == chall_tax.tag_names:
        return identity_mapping(chall_tax)
    if challenger.run_id:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=challenger.run_id, artifact_path="taxonomy_mapping.yaml")
        except mlflow.exceptions.MlflowException:
            local = None
        if local:
            data = yaml.safe_load(Path(local).read_text()) or {}
            try:
                return mapping_from_dict(data, champ_tax, chall_tax, f"run {challenger.run_id}: taxonomy_mapping.yaml")
            except ValueError as e:
                raise ValueError(f"the challenger's mapping does not fit the champion's taxonomy: {e}") from e
    raise ValueError(
        f"champion (taxonomy v{champ_tax.version}) and challenger (v{chall_tax.version}) differ and no mapping "
        "was found: give --mapping"
    )


def _alias(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def promote(
    eval_manifest: str,
    name: str = "creative-qa",
    tolerance: float = 0.02,
    force: bool = False,
    mapping_path: str | None = None,
    experiment: str = "creative-qa",
) -> Promotion:
    """Compare ``@challenger`` with ``@champion`` on ``eval_manifest`` and move ``champion`` if nothing regresses."""
    tracking.setup(experiment)
    client = MlflowClient()
    challenger = _alias(client, name, CHALLENGER)
    if challenger is None:
        raise ValueError(f"no models:/{name}@{CHALLENGER} to promote (train one with `creative-qa train --from ...`)")
    champion = _alias(client, name, CHAMPION)
    if champion is not None and champion.version == challenger.version:
        raise ValueError(f"version {challenger.version} is already the champion")
    df = read_manifest(eval_manifest)
    chall_probs, chall_tax = _scores(f"models:/{name}/{challenger.version}", df)
    champ_probs = None
    if champion is not None:
        champ_probs, champ_tax = _scores(f"models:/{name}/{champion.version}", df)
        mapping = _mapping_for(client, challenger, champ_tax, chall_tax, mapping_path)
    else:
        mapping = identity_mapping(chall_tax)
    labels = labels_for(df, chall_tax, mapping if champion is not None else None)
    ok = np.isfinite(chall_probs).all(axis=1)
    if champ_probs is not None:
        ok &= np.isfinite(champ_probs).all(axis=1)
        champ_probs = champ_probs[ok]
    chall_probs, labels = chall_probs[ok], labels[ok]
    rows = compare(champ_probs, chall_probs, labels, mapping, tolerance)
    result = Promotion(False, False, str(champion.version) if champion else None, str(challenger.version), rows)
    regressions = ",".join(f"{r.tag}:{r.delta:+.3f}" for r in result.regressions)
    if result.regressions and not force:
        client.set_model_version_tag(name, challenger.version, "promotion_refused", regressions)
        return result
    result.promoted, result.forced = True, bool(result.regressions)
    v = challenger.version
    client.set_registered_model_alias(name, CHAMPION, v)
    client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, v, "promoted_from", champion.version if champion else "")
    client.set_model_version_tag(name, v, "promotion_forced", str(result.forced).lower())
    client.set_model_version_tag(name, v, "promotion_eval", str(eval_manifest))
    if result.forced:
        client.set_model_version_tag(name, v, "promotion_regressions", regressions)
    if champion is not None:
        client.set_model_version_tag(name, champion.version, "superseded_by", str(v))
    log.info("models:/%s@%s is now version %s", name, CHAMPION, v)
    return result


NOT_PROMOTED = 3  # exit status of `creative-qa promote` when the challenger stays the challenger


def cmd_promote(a: argparse.Namespace) -> None:
    r = promote(a.eval, a.name, a.tolerance, a.force, a.mapping)
    print(f"champion v{r.champion_version or '-'} vs challenger v{r.challenger_version} on {a.eval}")
    print(r.table())
    summary = {
        "promoted": r.promoted,
        "forced": r.forced,
        "champion": r.challenger_version if r.promoted else r.champion_version,
        "regressions": [x.tag for x in r.regressions],
    }
    print(json.dumps(summary))
    if not r.promoted:
        # NOTE: a refusal is a decision, not a failure: its own exit status lets a pipeline tell them apart.
        sys.stderr.write(
            f"creative-qa promote: not promoted: {len(r.regressions)} shared tag(s) regress by more than "
            f"{a.tolerance} (--force to promote anyway)\n"
        )
        sys.exit(NOT_PROMOTED)
