"""Taxonomy mappings: how the tags of one taxonomy version become those of the next.

A mapping is a small YAML file (see ``creative_qa/taxonomies/v1_to_v2.yaml``)::

    old: v1.yaml                 # the taxonomies it maps between (paths relative to this file,
    new: v2.yaml                 #   or built-in names); commands may also pass them explicitly
    rename: {jpeg_artifacts: compression_artifacts}
    merge: {bad_exposure: [overexposed, underexposed]}      # new tag <- several old tags
    split: {blurry: [motion_blur, defocus_blur]}            # old tag -> several new tags
    add: [photo_background]
    drop: [letterboxed]

A tag with the same name in both taxonomies carries over unless an entry names it.
Validation is strict: every old and every new tag is accounted for exactly once, and
an unknown tag, a tag mapped two ways or one left out is a ``MappingError`` naming
the file and the entry.

Migrating labels never invents a 1: a merged tag is 1 if any source is 1, 0 only if
every source is 0, blank otherwise; a split's children are blank unless the parent
is 0 (then all 0); an added tag is blank; a dropped tag goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from creative_qa.manifest import label_matrix
from creative_qa.taxonomy import Taxonomy, TaxonomyError, builtin_path, load_taxonomy

_TOP_FIELDS = ("old", "new", "rename", "merge", "split", "add", "drop")


class MappingError(ValueError):
    """A mapping file that does not account for every tag exactly once."""


@dataclass(frozen=True)
class Rule:
    """Where one new tag comes from."""

    kind: str  # keep | rename | merge | split | add
    target: str  # the new tag
    sources: tuple[str, ...]  # its old tag(s); empty for ``add``
    entry: str  # the entry of the file that says so, e.g. "merge.bad_exposure"


@dataclass(frozen=True)
class TaxonomyMapping:
    old: Taxonomy
    new: Taxonomy
    rules: tuple[Rule, ...]  # one per new tag, in the new taxonomy's order
    dropped: tuple[str, ...]
    source: str = "<dict>"

    def rule(self, tag: str) -> Rule:
        for r in self.rules:
            if r.target == tag:
                return r
        raise KeyError(f"{tag!r} is not a tag of taxonomy {self.new.name} v{self.new.version}")

    @property
    def is_identity(self) -> bool:
        return not self.dropped and all(r.kind == "keep" for r in self.rules) and len(self.old) == len(self.new)

    def shared(self) -> dict[str, tuple[str, ...]]:
        """New tags the old model can answer for, with the old tags that answer (kept, renamed, merged)."""
        return {r.target: r.sources for r in self.rules if r.kind in ("keep", "rename", "merge")}

    def migrate(self, old_labels: np.ndarray) -> np.ndarray:
        """``(N, T_old)`` labels (1, 0, NaN) -> ``(N, T_new)`` by the rules; never invents a 1."""
        if old_labels.ndim != 2 or old_labels.shape[1] != len(self.old):
            raise ValueError(f"expected labels of shape (N, {len(self.old)}), got {old_labels.shape}")
        idx = {t: j for j, t in enumerate(self.old.tag_names)}
        out = np.full((len(old_labels), len(self.new)), np.nan, dtype=np.float32)
        for j, r in enumerate(self.rules):
            if r.kind in ("keep", "rename"):
                out[:, j] = old_labels[:, idx[r.sources[0]]]
            elif r.kind == "merge":
                src = old_labels[:, [idx[s] for s in r.sources]]
                any_one = (src == 1).any(axis=1)
                all_zero = (src == 0).all(axis=1)
                out[:, j] = np.where(any_one, 1.0, np.where(all_zero, 0.0, np.nan))
            elif r.kind == "split":
                parent = old_labels[:, idx[r.sources[0]]]
                out[:, j] = np.where(parent == 0, 0.0, np.nan)  # a 1 can't say which child: blank
        return out

    def is_old_manifest(self, df: pd.DataFrame) -> bool:
        """Whether a manifest is labeled in the old taxonomy (it has every tag the new one lacks)."""
        new_names = set(self.new.tag_names)
        old_only = [t for t in self.old.tag_names if t not in new_names]
        if old_only:
            return all(t in df.columns for t in old_only)
        return all(t in df.columns for t in self.old.tag_names) and not all(t in df.columns for t in new_names)

    def migrated_labels(self, df: pd.DataFrame) -> np.ndarray:
        """Labels of an old-version manifest in the new taxonomy.

        A column the manifest already has for a tag that only the new taxonomy knows (a few
        creatives re-labeled for a new tag) wins over the migrated blank where it is known.
        """
        out = self.migrate(label_matrix(df, self.old.tag_names, new=self.old.new_tags))
        old_names = set(self.old.tag_names)
        for j, t in enumerate(self.new.tag_names):
            if t in df.columns and t not in old_names:
                col = label_matrix(df, [t])[:, 0]
                known = ~np.isnan(col)
                out[known, j] = col[known]
        return out

    def migrate_frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """An old-version manifest rewritten in the new taxonomy (other columns kept, ``abspath`` dropped)."""
        labels = self.migrated_labels(df)
        tag_cols = set(self.old.tag_names) | set(self.new.tag_names)
        rest = [c for c in df.columns if c not in tag_cols and c not in ("path", "abspath")]
        out = pd.DataFrame({"path": df["path"].to_numpy()})
        for j, t in enumerate(self.new.tag_names):
            out[t] = pd.array([None if np.isnan(v) else int(v) for v in labels[:, j]], dtype="Int64")
        for c in rest:
            out[c] = df[c].to_numpy()
        return out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        d["rename"] = {r.sources[0]: r.target for r in self.rules if r.kind == "rename"}
        d["merge"] = {r.target: list(r.sources) for r in self.rules if r.kind == "merge"}
        split: dict[str, list[str]] = {}
        for r in self.rules:
            if r.kind == "split":
                split.setdefault(r.sources[0], []).append(r.target)
        d["split"] = split
        d["add"] = [r.target for r in self.rules if r.kind == "add"]
        d["drop"] = list(self.dropped)
        return {k: v for k, v in d.items() if v}

    def to_yaml(self) -> str:
        header = (
            f"# {self.old.name} v{self.old.version} -> {self.new.name} v{self.new.version}; "
            "tags with the same name in both carry over.\n"
        )
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False)


def _names(value: Any, source: str, entry: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise MappingError(f"{source}: {entry}: expected a tag name or a non-empty list of tag names")
    return list(value)


def mapping_from_dict(data: Any, old: Taxonomy, new: Taxonomy, source: str = "<dict>") -> TaxonomyMapping:
    """Validate a parsed mapping against the two taxonomies and resolve it to one rule per new tag."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MappingError(f"{source}: expected a mapping with rename/merge/split/add/drop entries")
    unknown = [k for k in data if k not in _TOP_FIELDS]
    if unknown:
        raise MappingError(f"{source}: {unknown[0]}: unknown field (allowed: {', '.join(_TOP_FIELDS)})")
    old_names, new_names = set(old.tag_names), set(new.tag_names)
    used_old: dict[str, str] = {}
    used_new: dict[str, str] = {}
    by_target: dict[str, Rule] = {}

    def take_old(tag: str, entry: str) -> None:
        if tag not in old_names:
            raise MappingError(f"{source}: {entry}: {tag!r} is not a tag of the old taxonomy (v{old.version})")
        if tag in used_old:
            raise MappingError(f"{source}: {entry}: old tag {tag!r} is already mapped by {used_old[tag]}")
        used_old[tag] = entry

    def take_new(tag: str, entry: str) -> None:
        if tag not in new_names:
            raise MappingError(f"{source}: {entry}: {tag!r} is not a tag of the new taxonomy (v{new.version})")
        if tag in used_new:
            raise MappingError(f"{source}: {entry}: new tag {tag!r} is already produced by {used_new[tag]}")
        used_new[tag] = entry

    def section(key: str, kind: type) -> Any:
        value = data.get(key) or kind()
        if not isinstance(value, kind):
            raise MappingError(f"{source}: {key}: expected a {'mapping' if kind is dict else 'list'}")
        return value

    for o, n in section("rename", dict).items():
        entry = f"rename.{o}"
        if not isinstance(n, str):
            raise MappingError(f"{source}: {entry}: expected one new tag name")
        take_old(o, entry)
        take_new(n, entry)
        by_target[n] = Rule("rename" if o != n else "keep", n, (o,), entry)
    for n, olds in section("merge", dict).items():
        entry = f"merge.{n}"
        olds = _names(olds, source, entry)
        if len(olds) < 2:
            raise MappingError(f"{source}: {entry}: a merge needs at least two old tags (use rename for one)")
        take_new(n, entry)
        for o in olds:
            take_old(o, entry)
        by_target[n] = Rule("merge", n, tuple(olds), entry)
    for o, news in section("split", dict).items():
        entry = f"split.{o}"
        news = _names(news, source, entry)
        if len(news) < 2:
            raise MappingError(f"{source}: {entry}: a split needs at least two new tags (use rename for one)")
        take_old(o, entry)
        for n in news:
            take_new(n, entry)
            by_target[n] = Rule("split", n, (o,), entry)
    for i, n in enumerate(section("add", list)):
        take_new(n, f"add[{i}]")
        by_target[n] = Rule("add", n, (), f"add[{i}]")
    dropped = []
    for i, o in enumerate(section("drop", list)):
        take_old(o, f"drop[{i}]")
        dropped.append(o)

    for t in old.tag_names:  # same name on both sides, named by no entry: carried over
        if t not in used_old and t in new_names and t not in used_new:
            used_old[t] = used_new[t] = "(same name)"
            by_target[t] = Rule("keep", t, (t,), "(same name)")
    missing_old = [t for t in old.tag_names if t not in used_old]
    if missing_old:
        raise MappingError(
            f"{source}: old tag {missing_old[0]!r} is not accounted for: rename, merge or split it, or drop it"
        )
    missing_new = [t for t in new.tag_names if t not in used_new]
    if missing_new:
        raise MappingError(f"{source}: new tag {missing_new[0]!r} is not accounted for: add it, or map old tags to it")
    return TaxonomyMapping(old, new, tuple(by_target[t] for t in new.tag_names), tuple(dropped), source)


def _taxonomy_ref(value: Any, base: Path, source: str, key: str) -> Taxonomy:
    if not isinstance(value, str):
        raise MappingError(f"{source}: {key}: expected a taxonomy file (or built-in name such as v1)")
    p = base / value
    try:
        return load_taxonomy(p if p.is_file() else (builtin_path(Path(value).stem) or value))
    except TaxonomyError as e:
        raise MappingError(f"{source}: {key}: {e}") from e


def load_mapping(
    path: str | Path, old: Taxonomy | str | Path | None = None, new: Taxonomy | str | Path | None = None
) -> TaxonomyMapping:
    """Load and validate a mapping file (or a built-in such as ``v1_to_v2``).

    ``old``/``new`` (taxonomies or their files) override the ``old:``/``new:`` the file names.

    Example:
        >>> m = load_mapping("v1_to_v2")
        >>> m.rule("bad_exposure").sources
        ('overexposed', 'underexposed')
    """
    p = Path(path)
    if not p.is_file() and builtin_path(str(path)) is not None:
        p = builtin_path(str(path))
    if not p.is_file():
        raise MappingError(f"{p}: mapping file not found")
    source = str(p)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise MappingError(f"{source}: not valid YAML: {e}") from e
    if data is not None and not isinstance(data, dict):
        raise MappingError(f"{source}: expected a mapping with rename/merge/split/add/drop entries")
    data = dict(data or {})
    taxonomies = []
    for key, given in (("old", old), ("new", new)):
        ref = data.pop(key, None)
        if isinstance(given, Taxonomy):
            taxonomies.append(given)
        elif given is not None:
            taxonomies.append(load_taxonomy(given))
        elif ref is not None:
            taxonomies.append(_taxonomy_ref(ref, p.parent, source, key))
        else:
            raise MappingError(f"{source}: {key}: the mapping names no {key} taxonomy; pass it explicitly")
    return mapping_from_dict(data, taxonomies[0], taxonomies[1], source)


def identity_mapping(taxonomy: Taxonomy) -> TaxonomyMapping:
    return mapping_from_dict({}, taxonomy, taxonomy, "<identity>")


def propose_mapping(old: Taxonomy, new: Taxonomy, old_ref: str | None = None, new_ref: str | None = None) -> str:
    """A mapping YAML for the obvious cases, to review: same names carry over, a tag whose
    description moved to a new name is a rename; other old tags are dropped and other new
    tags added (edit those into merges and splits where that is what happened)."""
    new_names, old_names = set(new.tag_names), set(old.tag_names)
    old_only = [t for t in old.tags if t.name not in new_names]
    new_only = {t.name: t for t in new.tags if t.name not in old_names}
    rename: dict[str, str] = {}
    for t in old_only:
        for n, nt in new_only.items():
            if nt.description.strip() and nt.description.strip() == t.description.strip() and n not in rename.values():
                rename[t.name] = n
                break
    changed = [
        t.name for t in old.tags if t.name in new_names and new.tags[new.index(t.name)].description != t.description
    ]
    body: dict[str, Any] = {}
    if old_ref:
        body["old"] = old_ref
    if new_ref:
        body["new"] = new_ref
    if rename:
        body["rename"] = rename
    drop = [t.name for t in old_only if t.name not in rename]
    add = [n for n in new_only if n not in rename.values()]
    if add:
        body["add"] = add
    if drop:
        body["drop"] = drop
    lines = [f"# Proposed mapping {old.name} v{old.version} -> {new.name} v{new.version}: review before use."]
    kept = [t for t in old.tag_names if t in new_names]
    lines.append(f"# Carried over by name: {', '.join(kept) or '-'}")
    if changed:
        lines.append(f"# Same name, description changed (check the meaning still holds): {', '.join(changed)}")
    if add and drop:
        lines.append("# Where a dropped tag became added ones, write `split` or `merge` instead of drop + add.")
    mapping_from_dict({k: v for k, v in body.items() if k not in ("old", "new")}, old, new, "<proposal>")
    return "\n".join(lines) + "\n" + yaml.safe_dump(body, sort_keys=False)


def labels_for(df: pd.DataFrame, taxonomy: Taxonomy, mapping: TaxonomyMapping | None = None) -> np.ndarray:
    """A manifest's ``(N, T)`` labels in ``taxonomy``, migrating it first if it is in the mapping's old one."""
    if mapping is not None and mapping.new.tag_names == taxonomy.tag_names and mapping.is_old_manifest(df):
        return mapping.migrated_labels(df)
    return label_matrix(df, taxonomy.tag_names, new=taxonomy.new_tags)


__all__ = [
    "MappingError",
    "Rule",
    "TaxonomyMapping",
    "identity_mapping",
    "labels_for",
    "load_mapping",
    "mapping_from_dict",
    "propose_mapping",
]
