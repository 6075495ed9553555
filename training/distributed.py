"""Data-parallel training under ``torchrun``: process group, per-rank device, BatchNorm sync, DDP wrap.

``torchrun --nproc-per-node N -m creative_qa.cli train ...`` sets ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``; without them everything here is a no-op and training is the ordinary
single process. The pitfalls this module (and the loop) handle:

* one device per rank (``cuda:LOCAL_RANK``), NCCL on GPU and gloo on CPU;
* the same initial weights everywhere, then a different seed per rank (the loop);
* BatchNorm statistics over the global batch: ``nn.SyncBatchNorm`` on GPU, and on
  CPU (where PyTorch's only runs on accelerators) ``CpuSyncBatchNorm`` below;
* every rank's loss touches every parameter each step (``touch_all``), so a method
  that skips a term on some batches can never leave a rank waiting in a reduction;
* MLflow and checkpoints on rank 0 only (the loop).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistContext:
    """The torchrun environment (or one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(ctx: DistContext, device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device."""
    if not ctx.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not tdist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        tdist.init_process_group(backend, timeout=timedelta(minutes=30))
        log.info("rank %d/%d joined (%s on %s)", ctx.rank, ctx.world, backend, device)
    return device


class _SyncStats(torch.autograd.Function):
    """All-reduce (sum) of local statistics, with the matching all-reduce of their gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = x.clone()
        tdist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.clone()
        tdist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (any device, gloo too)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        local = torch.cat(
            [xf.sum(dim=(0, 2, 3)), (xf * xf).sum(dim=(0, 2, 3)), xf.new_full((1,), float(x.numel() // c))]
        )
        total = _SyncStats.apply(local)
        n = total[-1]
        mean = total[:c] / n
        var = total[c : 2 * c] / n - mean * mean
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / max(n - 1, 1), alpha=m)
                self.num_batches_tracked.add_(1)
        y = (xf - mean.view(1, c, 1, 1)) / torch.sqrt(var.view(1, c, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm -> its synchronised form for this device (a no-op on models without BatchNorm)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def swap(m: nn.Module) -> nn.Module:
        if type(m) is nn.BatchNorm2d:
            s = CpuSyncBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
            s.load_state_dict(m.state_dict())
            s.train(m.training)
            return s
        for name, child in m.named_children():
            setattr(m, name, swap(child))
        return m

    return swap(model)


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DDP around ``model`` on more than one rank (broadcasting rank 0's weights); else ``model``."""
    if not ctx.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def touch_all(loss: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``loss + 0 * sum(parameters)``: every parameter gets a gradient on every rank, every step."""
    return loss + 0.0 * sum(p.reshape(-1)[0] for p in model.parameters() if p.requires_grad)


def mean_over_ranks(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Average logged scalars over ranks (what a single process on the global batch would log)."""
    if not ctx.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    tdist.all_reduce(t)
    return dict(zip(keys, (t / ctx.world).tolist(), strict=True))


def broadcast(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world
    tdist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        tdist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and tdist.is_initialized():
        tdist.destroy_process_group()
