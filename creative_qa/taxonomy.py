"""Versioned label taxonomy: the tags a model predicts and their default thresholds.

A taxonomy is a small YAML file (see ``creative_qa/taxonomies/v1.yaml``)::

    name: creative-qa
    version: "1"
    quality: {description: ...}
    tags:
      - {name: blurry, group: defect, description: ..., threshold: 0.5}
      - {name: motion_blur, group: defect, new: true}   # no labels yet: manifests may lack it

``load_taxonomy`` validates it strictly: a duplicate tag, a threshold outside
(0, 1) or an unknown field is a ``TaxonomyError`` naming the file and the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_THRESHOLD = 0.5
_TAG_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TOP_FIELDS = {"name", "version", "quality", "tags"}
_TAG_FIELDS = {"name", "group", "description", "threshold", "new"}
_QUALITY_FIELDS = {"description"}


class TaxonomyError(ValueError):
    """A taxonomy file (or dict) that does not follow the contract."""


@dataclass(frozen=True)
class Tag:
    name: str
    group: str = "defect"
    description: str = ""
    threshold: float = DEFAULT_THRESHOLD
    new: bool = False  # introduced in this version: a manifest may lack its column (all blank)


@dataclass(frozen=True)
class Taxonomy:
    name: str
    version: str
    tags: tuple[Tag, ...]
    quality_description: str = ""
    source: str = field(default="<dict>", compare=False)

    @property
    def tag_names(self) -> list[str]:
        return [t.name for t in self.tags]

    @property
    def new_tags(self) -> list[str]:
        """Tags marked ``new: true``: a manifest without their column is blank on purpose."""
        return [t.name for t in self.tags if t.new]

    def group(self, group: str) -> list[str]:
        """The tags of one group (``defect``, ``content``...), in taxonomy order."""
        return [t.name for t in self.tags if t.group == group]

    @property
    def thresholds(self) -> dict[str, float]:
        return {t.name: t.threshold for t in self.tags}

    def index(self, tag: str) -> int:
        try:
            return self.tag_names.index(tag)
        except ValueError:
            raise KeyError(f"tag {tag!r} is not in taxonomy {self.name} v{self.version}") from None

    def __len__(self) -> int:
        return len(self.tags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "quality": {"description": self.quality_description},
            # NOTE: `new` only when set, so v1 metadata stays byte-identical to what scorers already read.
            "tags": [{k: v for k, v in asdict(t).items() if k != "new" or v} for t in self.tags],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> Taxonomy:
        return taxonomy_from_dict(json.loads(text), source="<json>")


def _fail(source: str, where: str, msg: str) -> TaxonomyError:
    return TaxonomyError(f"{source}: {where}: {msg}")


def taxonomy_from_dict(data: Any, source: str = "<dict>") -> Taxonomy:
    """Validate a parsed taxonomy document and build a ``Taxonomy``."""
    if not isinstance(data, dict):
        raise _fail(source, "<top>", "expected a mapping with name, version and tags")
    unknown = set(data) - _TOP_FIELDS
    if unknown:
        raise _fail(source, sorted(unknown)[0], f"unknown field (allowed: {sorted(_TOP_FIELDS)})")
    for key in ("name", "version", "tags"):
        if key not in data:
            raise _fail(source, key, "required field is missing")
    quality = data.get("quality") or {}
    if not isinstance(quality, dict):
        raise _fail(source, "quality", "expected a mapping")
    unknown = set(quality) - _QUALITY_FIELDS
    if unknown:
        raise _fail(source, f"quality.{sorted(unknown)[0]}", "unknown field")
    raw_tags = data["tags"]
    if not isinstance(raw_tags, list) or not raw_tags:
        raise _fail(source, "tags", "expected a non-empty list")

    tags: list[Tag] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_tags):
        where = f"tags[{i}]"
        if not isinstance(raw, dict):
            raise _fail(source, where, "expected a mapping")
        unknown = set(raw) - _TAG_FIELDS
        if unknown:
            raise _fail(source, f"{where}.{sorted(unknown)[0]}", f"unknown field (allowed: {sorted(_TAG_FIELDS)})")
        name = raw.get("name")
        if not isinstance(name, str) or not _TAG_NAME.match(name):
            raise _fail(source, f"{where}.name", f"{name!r} must be snake_case ([a-z][a-z0-9_]*)")
        if name in seen:
            raise _fail(source, f"{where}.name", f"duplicate tag {name!r}")
        seen.add(name)
        threshold = raw.get("threshold", DEFAULT_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
            raise _fail(source, f"{where}.threshold", f"{threshold!r} must be a number strictly between 0 and 1")
        group = raw.get("group", "defect")
        if not isinstance(group, str) or not group:
            raise _fail(source, f"{where}.group", "must be a non-empty string")
        new = raw.get("new", False)
        if not isinstance(new, bool):
            raise _fail(source, f"{where}.new", f"{new!r} must be true or false")
        tags.append(
            Tag(
                name=name,
                group=group,
                description=str(raw.get("description", "")),
                threshold=float(threshold),
                new=new,
            )
        )

    return Taxonomy(
        name=str(data["name"]),
        version=str(data["version"]),
        tags=tuple(tags),
        quality_description=str(quality.get("description", "")),
        source=source,
    )


def builtin_path(name: str) -> Path | None:
    """The packaged file for a built-in name (``v1``, ``v2``, ``v1_to_v2``...), if there is one."""
    ref = resources.files("creative_qa") / "taxonomies" / f"{name}.yaml"
    return Path(str(ref)) if "/" not in name and ref.is_file() else None


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load and validate a taxonomy YAML file (or a built-in: ``v1``, ``v2``); ``None`` gives v1.

    Example:
        >>> load_taxonomy().tag_names[:3]
        ['blurry', 'low_resolution', 'jpeg_artifacts']
        >>> load_taxonomy("v2").version
        '2'
    """
    if path is None:
        ref = resources.files("creative_qa") / "taxonomies" / "v1.yaml"
        text, source = ref.read_text(encoding="utf-8"), "creative_qa/taxonomies/v1.yaml"
    else:
        p = Path(path)
        if not p.is_file() and builtin_path(str(path)) is not None:
            p = builtin_path(str(path))
        if not p.is_file():
            raise TaxonomyError(f"{p}: taxonomy file not found")
        text, source = p.read_text(encoding="utf-8"), str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TaxonomyError(f"{source}: not valid YAML: {e}") from e
    return taxonomy_from_dict(data, source=source)
