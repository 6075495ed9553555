"""Which tags a model may flag, and at what threshold: the flag policy an exported model carries.

A flag is a claim (DESIGN.md): a tag is flagged only where validation backs it. Training
calibrates the policy (``training.flags.calibrate_flags``); the ONNX metadata carries it
(``creative_qa.flags``); ``Scorer`` reads it. A tag is ``reliable`` when the model ranks it
above its prior on validation and a threshold reaches the target precision there; any other
tag is unreliable for that model: its probability is kept, it is never flagged, and
``reason`` says why.

    >>> policy = FlagPolicy.from_json(meta["creative_qa.flags"])
    >>> policy.flags({"blurry": 0.9, "watermark": 0.95})
    ['blurry']                                   # watermark: unreliable for this model
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class TagFlag:
    threshold: float  # flag at or above this probability (when reliable)
    reliable: bool
    reason: str  # why the tag is (un)reliable, in words
    val_ap: float | None = None  # validation AP on the noisy labels
    prior: float | None = None  # observed positive share of the validation labels
    est_share: float | None = None  # the true share behind it, corrected for the annotator rates
    precision: float | None = None  # noise-corrected validation precision at the threshold


@dataclass(frozen=True)
class FlagPolicy:
    target_precision: float
    miss_rate: float  # annotator rates the precision was corrected for
    fp_rate: float
    rates_source: str  # "estimated" (from validation) or "given"
    tags: dict[str, TagFlag] = field(default_factory=dict)
    anchors: tuple[int, int] = (0, 0)  # validation labels an estimate rests on: (positive, negative) anchors

    @property
    def thresholds(self) -> dict[str, float]:
        return {t: f.threshold for t, f in self.tags.items()}

    @property
    def unreliable(self) -> dict[str, str]:
        """Tag -> why it is never flagged by this model."""
        return {t: f.reason for t, f in self.tags.items() if not f.reliable}

    def flags(self, scores: dict[str, float]) -> list[str]:
        """Reliable tags at or above their threshold, in ``scores``' order."""
        return [t for t, p in scores.items() if (f := self.tags.get(t)) is not None and f.reliable and p >= f.threshold]

    @classmethod
    def from_thresholds(cls, thresholds: dict[str, float]) -> FlagPolicy:
        """A model without a calibrated policy: every tag flagged at its threshold."""
        why = "threshold only: no precision target was calibrated"
        tags = {t: TagFlag(float(v), True, why) for t, v in thresholds.items()}
        return cls(target_precision=0.0, miss_rate=0.0, fp_rate=0.0, rates_source="none", tags=tags)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlagPolicy:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}  # a field of a later version is not this one's to read
        d["tags"] = {t: TagFlag(**f) for t, f in d.get("tags", {}).items()}
        d["anchors"] = tuple(d.get("anchors", (0, 0)))  # (0, 0): a policy from before the field
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> FlagPolicy:
        return cls.from_dict(json.loads(text))
