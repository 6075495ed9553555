"""A round trip with Label Studio: tasks out (with the model's guesses), a label manifest back.

Out (``write_project``): ``label_config.xml``, one yes/no choice per tag of the taxonomy under its
description, a quality number, and the model's view of the creative as text; ``tasks.json``, one task per
creative: its image (a URL under Label Studio's local-file serving), its path, why it was chosen, and the
model's probabilities as pre-annotations where the model is confident (at ``prefill`` or over, or at
``1 - prefill`` or under): the tags it is unsure of are left for the annotator, not pre-answered.

Back (``read_export``): Label Studio's JSON export -> a label manifest, one row per annotated task (a task
nobody annotated, or only skipped, gives none). An answered tag is 1 or 0; a tag no annotator answered
stays blank (unknown, never 0). Several annotators: the majority's answer, blank on a
tie; every disagreement is kept in the ``disagreements`` column (``tag: yes 1 / no 1``) and the annotators
in ``annotators``. ``merge`` updates an existing manifest: answered tags replace the old values, unanswered
ones keep theirs, new creatives are appended.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from creative_qa.media import is_video_path
from creative_qa.taxonomy import Taxonomy

LOCAL_FILES = "/data/local-files/?d="  # Label Studio's local-file serving (LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED)
YES, NO = "yes", "no"
PREFILL = 0.9
META_COLUMNS = ("annotators", "disagreements", "ls_task")
TIES = "_ties"  # read_export's tags tied between annotators, for merge (not written to a manifest)


def label_config(taxonomy: Taxonomy) -> str:
    """The labeling interface: the image, the model's view, a yes/no choice per tag, a quality number."""
    parts = [
        "<View>",
        '  <Image name="image" value="$image" maxWidth="720px"/>',
        '  <Text name="model" value="$model"/>',
    ]
    for tag in taxonomy.tags:
        hint = f"{tag.name}: {tag.description}" if tag.description else tag.name
        parts += [
            f'  <Header value={quoteattr(hint)} size="6"/>',
            f'  <Choices name="{tag.name}" toName="image" choice="single-radio" showInline="true">',
            f'    <Choice value="{YES}"/>',
            f'    <Choice value="{NO}"/>',
            "  </Choices>",
        ]
    desc = taxonomy.quality_description or "overall quality, 0 (unusable) to 1 (excellent)"
    parts += [f"  <Header value={quoteattr('quality: ' + desc)} size=\"6\"/>",
              '  <Number name="quality" toName="image" min="0" max="1" step="0.05"/>', "</View>"]  # fmt: skip
    return "\n".join(parts) + "\n"


def tasks(
    rows: pd.DataFrame,
    taxonomy: Taxonomy,
    root: str | Path,
    url_prefix: str = LOCAL_FILES,
    prefill: float = PREFILL,
    model_version: str = "creative-qa",
) -> list[dict[str, Any]]:
    """Label Studio tasks for ``rows`` (``abspath``; optionally ``quality``, tag probabilities, ``why``)."""
    root = Path(root).resolve()
    out = []
    for _, r in rows.iterrows():
        path = Path(r["abspath"]).resolve()
        if is_video_path(path):  # the interface shows an image; see write_project
            continue
        try:
            rel = path.relative_to(root)
        except ValueError as e:
            raise ValueError(f"{path} is not under the Label Studio document root {root} (--ls-root)") from e
        data: dict[str, Any] = {"image": url_prefix + quote(str(rel)), "path": str(path)}
        probs = {t: float(r[t]) for t in taxonomy.tag_names if t in r and pd.notna(r[t])}
        view = [f"quality {r['quality']:.2f}"] if "quality" in r and pd.notna(r["quality"]) else []
        view += [f"{t} {p:.2f}" for t, p in probs.items()]
        data["model"] = ("model: " + ", ".join(view)) if view else "model: no scores"
        if "why" in r and pd.notna(r["why"]):
            data["model"] += f" | chosen because {r['why']}"
        task: dict[str, Any] = {"data": data}
        result = [
            {"from_name": t, "to_name": "image", "type": "choices", "value": {"choices": [YES if p >= 0.5 else NO]}}
            for t, p in probs.items()
            if p >= prefill or p <= 1 - prefill
        ]
        if result:
            task["predictions"] = [{"model_version": model_version, "result": result}]
        out.append(task)
    return out


def write_project(
    folder: str | Path, rows: pd.DataFrame, taxonomy: Taxonomy, root: str | Path, **kwargs: Any
) -> tuple[dict[str, Path], list[str]]:
    """``label_config.xml`` and ``tasks.json`` in ``folder`` (see ``tasks`` for ``kwargs``); and the videos left out.

    NOTE: the interface is an image's; a video among ``rows`` gets no task (Label Studio's Image cannot show it,
    and one interface for both would leave every task a data field it lacks). They are returned to be said."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg, tk = folder / "label_config.xml", folder / "tasks.json"
    cfg.write_text(label_config(taxonomy))
    tk.write_text(json.dumps(tasks(rows, taxonomy, root, **kwargs), indent=1))
    videos = [str(p) for p in rows["abspath"] if is_video_path(p)]
    return {"label_config": cfg, "tasks": tk}, videos


def _annotator(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("username") or f"user {completed_by.get('id')}")
    return f"user {completed_by}"


def read_export(export: str | Path, taxonomy: Taxonomy, out_dir: str | Path | None = None) -> pd.DataFrame:
    """Label Studio's JSON export -> a manifest frame (see the module doc); paths relative to ``out_dir`` where
    they are under it, else absolute."""
    try:
        items = json.loads(Path(export).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{export}: not a Label Studio JSON export ({e})") from e
    if not isinstance(items, list):
        raise ValueError(f"{export}: a Label Studio JSON export is a list of tasks, got {type(items).__name__}")
    tags = taxonomy.tag_names
    base = Path(out_dir).resolve() if out_dir is not None else None
    rows = []
    for task in items:
        data = task.get("data") or {}
        if "path" not in data:
            raise ValueError(f"{export}: task {task.get('id')} has no data.path (not a creative-qa task)")
        answers: dict[str, list[tuple[str, int]]] = {t: [] for t in tags}
        quality: list[float] = []
        who = []
        done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not done:  # not annotated yet (or skipped): no row, so an update leaves the creative as it was
            continue
        for ann in done:
            name = _annotator(ann.get("completed_by"))
            who.append(name)
            for res in ann.get("result") or []:
                key, value = res.get("from_name"), res.get("value") or {}
                if key in answers and value.get("choices"):
                    answers[key].append((name, 1 if value["choices"][0] == YES else 0))
                elif key == "quality" and value.get("number") is not None:
                    quality.append(float(value["number"]))
        row: dict[str, Any] = {"path": _relative(data["path"], base)}
        disagreements, ties = [], []
        for t in tags:
            votes = Counter(v for _, v in answers[t])
            if not votes:
                row[t] = np.nan  # nobody answered: unknown, never 0
                continue
            if len(votes) > 1:
                disagreements.append(f"{t}: {YES} {votes[1]} / {NO} {votes[0]}")
            if votes[1] == votes[0]:
                row[t] = np.nan  # a tie: unknown, and an update blanks what was there (``merge``)
                ties.append(t)
            else:
                row[t] = float(votes[1] > votes[0])
        row["quality"] = float(np.mean(quality)) if quality else np.nan
        row["annotators"] = "; ".join(dict.fromkeys(who))
        row["disagreements"] = "; ".join(disagreements)
        row["ls_task"] = task.get("id")
        row[TIES] = ",".join(ties)
        rows.append(row)
    return pd.DataFrame(rows, columns=["path", *tags, "quality", *META_COLUMNS, TIES])


def _relative(path: str, base: Path | None) -> str:
    p = Path(path).resolve()
    return os.path.relpath(p, base) if base is not None and p.is_relative_to(base) else str(p)


def merge(existing: pd.DataFrame, new: pd.DataFrame, tags: list[str]) -> pd.DataFrame:
    """``existing`` updated with ``new`` (``read_export``'s; both with ``abspath``): an answered tag replaces the old
    value, a tie blanks it, an unanswered one keeps it; the annotators, disagreements and task are the new
    round's; creatives not in ``existing`` are appended."""
    old = existing.copy()
    index = {str(Path(p).resolve()): i for i, p in enumerate(old["abspath"])}
    for col in (*tags, "quality"):
        old[col] = pd.to_numeric(old[col], errors="coerce") if col in old.columns else np.nan
    for col in META_COLUMNS:  # text: a manifest's empty column reads back as floats
        old[col] = old[col].astype(object) if col in old.columns else pd.Series([None] * len(old), dtype=object)
    extra = []
    for _, r in new.iterrows():
        i = index.get(str(Path(r["abspath"]).resolve()))
        if i is None:
            extra.append(r.drop(TIES))
            continue
        tied = set(filter(None, str(r[TIES]).split(",")))
        for col in (*tags, "quality"):
            if pd.notna(r[col]) or col in tied:
                old.at[i, col] = r[col]
        for col in META_COLUMNS:
            old.at[i, col] = r[col]
    out = pd.concat([old, pd.DataFrame(extra)], ignore_index=True) if extra else old
    return out.drop(columns=["abspath"])
