"""torchrun with 2 CPU processes (gloo) trains the same model as one process on the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

ROOT = Path(__file__).parents[2]
STEPS = 3

# No augmentation and no dropout, so one process and two see exactly the same computation. The
# loss is a per-creative mean (so the global loss is the mean of the ranks'), and it leaves the
# quality head out: the loop must still give that head a gradient on every rank, or DDP hangs.
LOGGED_METHOD = """
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from training.methods.base import Method, register


@register("plain_logged")
class PlainLogged(Method):
    def __init__(self, model, quality_weight=1.0, out=None, last_step=0):
        super().__init__(model, quality_weight)
        self.out, self.last_step = Path(out), last_step
        self.rank = os.environ.get("RANK", "0")
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, self.out / f"init-{self.rank}.pt")

    def train_step(self, batch, unlabeled, step):
        tags, _ = self.model(batch["images"])
        y = batch["labels"]
        known = (~torch.isnan(y)).float()
        loss = (F.binary_cross_entropy_with_logits(tags, torch.nan_to_num(y), reduction="none") * known).sum()
        loss = loss / tags.shape[0]
        with (self.out / f"loss-{self.rank}.txt").open("a") as f:
            f.write(f"{step} {loss.item()!r} {tags.shape[0]}\\n")
        return loss, {}

    def after_step(self, step):
        if step + 1 == self.last_step:
            net = getattr(self.model, "module", self.model)
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            torch.save(state, self.out / f"params-{self.rank}.pt")
"""


def _train_args(tiny_data, tmp_path: Path, name: str, batch: int) -> list[str]:
    out = tmp_path / name
    out.mkdir()
    return [
        "-m",
        "creative_qa.cli",
        "train",
        *TINY_OVERRIDES,
        f"method.name={tmp_path / 'plain_logged.py'}",
        f"method.params={{out: {out}, last_step: {STEPS}}}",
        "model.drop_rate=0",
        f"optim.batch_size={batch}",
        f"optim.steps_per_epoch={STEPS}",
        "optim.epochs=1",
        f"data.labeled={tiny_data['train_labeled']}",
        "data.workers=1",
        "threads=1",
        "device=cpu",
        f"output_dir={out / 'run'}",
    ]


def _losses(folder: Path, rank: str) -> list[tuple[float, int]]:
    rows = [line.split() for line in (folder / f"loss-{rank}.txt").read_text().splitlines()]
    return [(float(loss), int(n)) for _, loss, n in rows]


@pytest.fixture
def method_file(tmp_path):
    (tmp_path / "plain_logged.py").write_text(LOGGED_METHOD)


def test_two_gloo_ranks_match_one_process_on_the_same_global_batch(tiny_data, tmp_path, method_file):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONPATH": str(ROOT)}
    single = subprocess.run(
        [sys.executable, *_train_args(tiny_data, tmp_path, "single", 16)], env=env, capture_output=True, timeout=600
    )
    assert single.returncode == 0, single.stderr.decode()[-3000:]
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            *_train_args(tiny_data, tmp_path, "ddp", 8),
        ],
        env=env | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr.decode()[-3000:]

    one = _losses(tmp_path / "single", "0")
    r0, r1 = _losses(tmp_path / "ddp", "0"), _losses(tmp_path / "ddp", "1")
    assert len(one) == len(r0) == len(r1) == STEPS
    assert all(n == 16 for _, n in one) and all(n == 8 for _, n in r0 + r1)
    # NOTE: float summation order differs, and Adam's first steps (update ~ lr * sign(grad)) turn
    # rounding-level gradient differences into visible ones, so later steps get a looser tolerance.
    for step, ((l1, _), (a, _), (b, _)) in enumerate(zip(one, r0, r1, strict=True)):
        tol = (1e-5 if step == 0 else 1e-3) * max(1.0, abs(l1))
        assert abs((a + b) / 2 - l1) < tol, f"step {step}: ddp {(a + b) / 2} vs one {l1}"
    assert any(abs(a - b) > 1e-6 for (a, _), (b, _) in zip(r0, r1, strict=True))  # the ranks saw different data

    p0 = torch.load(tmp_path / "ddp" / "params-0.pt")
    p1 = torch.load(tmp_path / "ddp" / "params-1.pt")
    ps = torch.load(tmp_path / "single" / "params-0.pt")
    init = torch.load(tmp_path / "single" / "init-0.pt")
    assert all(torch.equal(init[k], v) for k, v in torch.load(tmp_path / "ddp" / "init-1.pt").items())
    for k in p0:
        assert torch.equal(p0[k], p1[k]), f"replicas differ in {k}"
    weights = [k for k in p0 if p0[k].is_floating_point()]

    def dist(a, b):
        return sum(float((a[k].float() - b[k].float()).pow(2).sum()) for k in weights) ** 0.5

    # the two runs took the same path: their gap is a small fraction of how far training moved them
    assert dist(p0, ps) < 0.1 * dist(ps, init), (dist(p0, ps), dist(ps, init))
    # only rank 0 wrote a checkpoint, into the one output folder
    assert (tmp_path / "ddp" / "run" / "last.pt").is_file()
