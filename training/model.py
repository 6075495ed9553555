"""A timm backbone shared over the views of a creative, with a tag head and a quality head.

The model takes the raw ``uint8`` views straight from ``creative_qa.preprocess``
and normalises them itself, so the very same ``forward`` runs in training and
inside the exported ONNX graph: nothing model-specific is left for the scorer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
from torch import nn

from training.checkpoint import Checkpoint
from training.measures import COUNT as MEASURES
from training.measures import measure, scaled

log = logging.getLogger(__name__)

GRID_FEATURES = 3  # numbers in a grid view (creative_qa.preprocess.grid_features)
PROFILE_FEATURES = 3  # ... and in its step-energy profile (creative_qa.preprocess.scale_profile)
TEXT_FEATURES = 1  # ... and the text cover in its size ring (creative_qa.preprocess.text_cover)
PROFILE_HIDDEN = 32  # width of the small MLP the grid view's numbers also pass through, with a profile
MEASURE_HIDDEN = 32  # ... and the measurements' (training.measures)


class _SharedByCopies:
    """State a model's copies (an EMA teacher, a warm start's copy of its parent) share with it:
    ``copy.deepcopy`` of the model keeps the same object."""

    def __deepcopy__(self, memo: dict) -> _SharedByCopies:
        return self


class PassCounter(_SharedByCopies):
    """Views through a ``CreativeModel`` (and its copies: EMA teachers), with and without autograd.

    A view forwarded with grad enabled is also backpropagated (forward + backward); one
    without (a teacher, evaluation) is a forward pass only. Benchmarks compare arms'
    budgets with it (``TrainResult.passes``): a pretraining stage or a teacher counts in its arm.
    """

    def __init__(self) -> None:
        self.grad_views = 0
        self.nograd_views = 0

    def snapshot(self) -> tuple[int, int]:
        return self.grad_views, self.nograd_views

    def since(self, snap: tuple[int, int]) -> dict[str, int]:
        return {"train_views": self.grad_views - snap[0], "forward_only_views": self.nograd_views - snap[1]}


class FrameBags(_SharedByCopies, threading.local):
    """The frame bags of the batch in hand (see ``CreativeModel.frame_bags``), shared by a model and its copies."""

    bags: torch.Tensor | None = None  # (R,) batch row of each image row
    n: int = 0  # batch rows
    how: str = "max"


def pool_frames(
    tags: torch.Tensor, quality: torch.Tensor, bags: torch.Tensor, n: int, how: str = "max"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame rows -> creatives: tag logits ``(R, T) -> (n, T)``, quality logit ``(R,) -> (n,)``."""
    idx = bags.to(tags.device).long()
    t = tags.float()
    top = t.new_zeros(n, t.shape[1]).scatter_reduce(0, idx[:, None].expand_as(t), t, "amax", include_self=False)
    if how == "lse":
        s = torch.zeros_like(top).index_add(0, idx, torch.exp(t - top[idx].detach()))
        top = top.detach() + torch.log(s)
    counts = torch.bincount(idx, minlength=n).clamp(min=1).to(t.dtype)
    p = t.new_zeros(n).index_add(0, idx, torch.sigmoid(quality.float())) / counts
    q = torch.logit(p.clamp(1e-6, 1 - 1e-6))
    return top.to(tags.dtype), q.to(quality.dtype)


class CreativeModel(nn.Module):
    def __init__(
        self,
        backbone: str,
        num_tags: int,
        views: int,
        pretrained: bool = False,
        weights: str | None = None,
        drop_rate: float = 0.1,
        drop_path_rate: float = 0.0,
        grid_view: bool = False,
        grid_profile: bool = False,
        text_cover: bool = False,
        measures: bool = False,
        crops: int = 0,
    ):
        super().__init__()
        kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        if weights:
            kwargs["pretrained_cfg_overlay"] = {"file": weights}
        self.backbone = timm.create_model(backbone, pretrained=pretrained or bool(weights), num_classes=0, **kwargs)
        cfg = self.backbone.pretrained_cfg
        mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), dtype=torch.float32) * 255.0
        std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), dtype=torch.float32) * 255.0
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        self.views = views
        self.backbone_name = backbone
        self.passes = PassCounter()  # what this model and its copies ran (views)
        self._frames = FrameBags()
        # The grid view (creative_qa.preprocess.grid_view) is three numbers as uniform planes, not a
        # picture: they join the features as they are, read off one pixel, and skip the backbone.
        # With a profile, the view's inner square holds three more numbers (creative_qa.preprocess.grid_view),
        # and all six also pass through a small MLP: an upscale is a band of the profile (ramps over 3-6
        # px, where blur's width grows with the creative), which one linear head cannot carve out.
        # With a text cover, one more number from the size ring: how much of the creative text lines cover.
        self.grid_view = bool(grid_view)
        self.grid_profile = bool(grid_view and grid_profile)
        self.text_cover = bool(self.grid_profile and text_cover)
        # The neutral levels: no lift, half the evidence, no excess; with a profile, sharp edges (log2 ratios of 1);
        # no text (then (level - 0) / 4 is the share covered in percent).
        centre = [64.0, 128.0, 128.0] + [128.0] * PROFILE_FEATURES * self.grid_profile + [0.0] * self.text_cover
        self.register_buffer("grid_centre", torch.tensor(centre), persistent=False)
        dim = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        numbers = GRID_FEATURES + PROFILE_FEATURES * self.grid_profile + TEXT_FEATURES * self.text_cover
        numbers *= self.grid_view
        self.grid_mlp = nn.Sequential(nn.Linear(numbers, PROFILE_HIDDEN), nn.GELU()) if self.grid_profile else None
        # Classical measurements of the whole view and the detail crops (training.measures), computed in the
        # graph: bars on two sides, a mosaic's flat blocks, noise, exposure. They join the features as they are
        # and through a small MLP of their own (a letterbox is a band of bar shares, not a slope).
        self.measures = bool(measures)
        self.crops = crops
        self.measure_mlp = nn.Sequential(nn.Linear(MEASURES, MEASURE_HIDDEN), nn.GELU()) if self.measures else None
        extra = (MEASURES + MEASURE_HIDDEN) * self.measures
        width = dim * (views - self.grid_view) + numbers + PROFILE_HIDDEN * self.grid_profile + extra
        # NOTE: views have fixed roles (whole, detail crops), so features are concatenated, not pooled.
        self.backbone_width = dim * (views - self.grid_view)  # the first features: the picture views' backbone's
        self.dropout = nn.Dropout(drop_rate)
        self.tag_head = nn.Linear(width, num_tags)
        self.quality_head = nn.Linear(width, 1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, V, S, S, 3)`` -> ``(N, F)``: each picture view's backbone features, then the grid's numbers,
        then the measurements.

        A call with other than the model's ``views`` (a method embedding single windows) has no grid view and
        no measurements.
        """
        grid, measured = None, None
        if self.measures and images.shape[1] == self.views:
            m = scaled(measure(images[:, 0], images[:, 1 : 1 + self.crops]))
            measured = torch.cat([m, self.measure_mlp(m)], dim=1)
        if self.grid_view and images.shape[1] == self.views:
            # (level - the neutral level) / 4: a doubled step is 16, a doubled step-energy ratio 16
            grid = images[:, -1, 0, 0, :]
            if self.grid_profile:  # the profile: the inner square's pixel
                s = images.shape[2] // 2
                grid = torch.cat([grid, images[:, -1, s, s, :]], dim=1)
            if self.text_cover:  # the text cover: the size ring's third number
                e = images.shape[2] // 8
                grid = torch.cat([grid, images[:, -1, e, e, 2:]], dim=1)
            grid = (grid.float() - self.grid_centre) / 4.0
            if self.grid_mlp is not None:
                grid = torch.cat([grid, self.grid_mlp(grid)], dim=1)
            images = images[:, :-1]
        n, v, h, w, c = images.shape  # (N, V, S, S, 3) uint8
        if torch.is_grad_enabled():
            self.passes.grad_views += n * v
        else:
            self.passes.nograd_views += n * v
        x = images.reshape(n * v, h, w, c).permute(0, 3, 1, 2).float()  # (N*V, 3, S, S)
        x = (x - self.mean) / self.std
        f = self.backbone(x)  # (N*V, D)
        f = f.reshape(n, v * f.shape[-1])  # (N, V*D)
        return torch.cat([f, *(x.to(f.dtype) for x in (grid, measured) if x is not None)], dim=1)

    def heads(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(N, F)`` (``features``) -> tag logits ``(N, T)`` and quality logit ``(N,)`` (methods that work in
        embedding space, such as VAT or mixup, perturb ``f`` and call this)."""
        f = self.dropout(f)
        return self.tag_head(f), self.quality_head(f).squeeze(-1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(N, V, S, S, 3)`` -> tag logits ``(N, T)`` and quality logit ``(N,)``."""
        tags, quality = self.heads(self.features(images))
        fb = self._frames
        if fb.bags is not None and len(images) == len(fb.bags):  # frames of videos (see frame_bags)
            return pool_frames(tags, quality, fb.bags, fb.n, fb.how)
        return tags, quality

    @contextmanager
    def frame_bags(self, bags: torch.Tensor | None, n: int, how: str = "max") -> Iterator[None]:
        """Within this block, this model (and its copies) pools ``len(bags)`` image rows into ``n`` creatives.

        A video's sampled frames are rows of one bag (``training.data``): its tag logits pool
        by ``max`` (the scorer's aggregation: the highest probability over frames) or ``lse``
        (log-sum-exp, a smooth max), its quality is the mean of the frames' probabilities (the
        scorer's again). So methods see one prediction per creative and stay unaware of frames.
        """
        if how not in ("max", "lse"):
            raise ValueError(f"frame pooling must be max or lse, got {how!r}")
        fb = self._frames
        prev = (fb.bags, fb.n, fb.how)
        fb.bags, fb.n, fb.how = bags, n, how
        try:
            yield
        finally:
            fb.bags, fb.n, fb.how = prev

    def share_run(self, other: CreativeModel) -> CreativeModel:
        """Count this model's passes with ``other``'s and pool its frames' bags: a teacher built apart from it."""
        self.passes, self._frames = other.passes, other._frames
        return self


class ProbabilityModel(nn.Module):
    """What gets exported: sigmoid on both heads, so the graph returns probabilities."""

    def __init__(self, model: CreativeModel):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tags, quality = self.model(images)
        return torch.sigmoid(quality), torch.sigmoid(tags)


@torch.no_grad()
def init_tag_prior(model: CreativeModel, labels: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """Set the tag head's bias to the logit of each tag's positive rate among known labels.

    A from-scratch head starts at p = 0.5 for every tag; rare defect tags then spend their first
    hundreds of steps unlearning that, and the early teacher's pseudo-labels are noise. Returns the prior.
    """
    known = ~torch.isnan(labels)
    pos = torch.nan_to_num(labels, nan=0.0).sum(0)
    prior = ((pos + eps) / (known.sum(0) + 2 * eps)).clamp(eps, 1 - eps)
    model.tag_head.bias.copy_(torch.logit(prior).to(model.tag_head.bias))
    return prior


def build_model(model_cfg, num_tags: int) -> CreativeModel:
    return CreativeModel(
        model_cfg.backbone,
        num_tags,
        views=model_cfg.views,
        pretrained=model_cfg.pretrained,
        weights=model_cfg.weights,
        drop_rate=model_cfg.drop_rate,
        drop_path_rate=model_cfg.drop_path_rate,
        grid_view=bool(model_cfg.grid_view),
        grid_profile=bool(model_cfg.grid_profile),
        text_cover=bool(model_cfg.text_cover),
        measures=bool(model_cfg.measures),
        crops=model_cfg.crops,
    )


def config_of(ckpt: Checkpoint):
    """The ``TrainConfig`` a checkpoint was trained with.

    Its views come from its preprocessing spec: a checkpoint from before the grid view existed
    has none, and one from before the view's window moved to the edges reads the centre,
    whatever today's defaults are.
    """
    from training.config import TrainConfig, build_config

    cfg = build_config(TrainConfig, ckpt.config, "<checkpoint>", strict=False)
    adopt_checkpoint(cfg, ckpt)
    return cfg


def adopt_checkpoint(cfg, ckpt: Checkpoint) -> None:
    """Set ``cfg``'s architecture to a checkpoint's: its views (``adopt_views``) and whether it reads the
    measurements (``model.measures``; 0 for a checkpoint from before the field)."""
    adopt_views(cfg, ckpt.preprocess)
    cfg.model.measures = int(((ckpt.config or {}).get("model") or {}).get("measures", 0))


def adopt_views(cfg, preprocess: dict | None) -> None:
    """Set ``cfg``'s view fields to a checkpoint's preprocessing spec (``ckpt.preprocess``): a run resumed or a
    model rebuilt keeps the views it was trained on, whatever today's defaults (a field the spec predates has
    the value it had before the field existed, ``PreprocessSpec.from_dict``)."""
    from creative_qa.preprocess import PreprocessSpec
    from training.config import VIEW_FIELDS

    spec = PreprocessSpec.from_dict(preprocess or {})
    for f in VIEW_FIELDS:
        setattr(cfg.model, f, getattr(spec, f))


def model_from_checkpoint(ckpt: Checkpoint | str | Path) -> CreativeModel:
    """The evaluated network of a checkpoint (the teacher, for methods that keep one), in eval mode."""
    if not isinstance(ckpt, Checkpoint):
        ckpt = Checkpoint.load(ckpt)
    cfg = config_of(ckpt)
    cfg.model.pretrained, cfg.model.weights = False, None  # the checkpoint has the weights
    model = build_model(cfg.model, len(ckpt.taxonomy["tags"]))
    model.load_state_dict(ckpt.eval_model or ckpt.model)
    return model.eval()
