"""A run SIGKILLed mid-epoch and resumed from its last step checkpoint ends where an uninterrupted run ends."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_OVERRIDES
from training.checkpoint import Checkpoint

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

ROOT = Path(__file__).parents[2]


def _args(tiny_data, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "creative_qa.cli",
        "train",
        *TINY_OVERRIDES,
        "method.name=mean_teacher",  # EMA teacher, strong/weak views, unlabeled stream: all must resume (one run)
        f"data.labeled={tiny_data['train_labeled']}",
        f"data.unlabeled={tiny_data['unlabeled']}",
        "data.workers=1",
        "optim.batch_size=8",
        "optim.epochs=2",
        "optim.steps_per_epoch=24",
        "optim.checkpoint_every=3",
        "threads=1",
        "device=cpu",
        f"output_dir={out}",
    ]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return env | {"PYTHONPATH": str(ROOT)}


def _state(path: Path) -> dict[str, torch.Tensor]:
    ckpt = Checkpoint.load(path)
    return {**{f"model.{k}": v for k, v in ckpt.model.items()}, **{f"ema.{k}": v for k, v in ckpt.eval_model.items()}}


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tiny_data, tmp_path):
    env = _env()
    full = subprocess.run(_args(tiny_data, tmp_path / "full"), env=env, capture_output=True, timeout=600)
    assert full.returncode == 0, full.stderr.decode()[-3000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(_args(tiny_data, killed_dir), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt_path, seen = killed_dir / "last.pt", None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt_path.is_file():
            c = Checkpoint.load(ckpt_path)
            if not c.epoch_done and (c.epoch, c.epoch_step) >= (1, 3):  # inside the second epoch
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed mid-epoch"
    seen = Checkpoint.load(ckpt_path)
    assert not seen.epoch_done and seen.epoch == 1 and 0 < seen.epoch_step < 24
    assert seen.step == 24 + seen.epoch_step

    # the README's command: only the checkpoint; data, recipe and settings come from it
    cmd = [sys.executable, "-m", "creative_qa.cli", "train", "--resume", str(ckpt_path)]
    resumed = subprocess.run(cmd, env=env, capture_output=True, timeout=600, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    final = Checkpoint.load(ckpt_path)
    assert final.run_id == seen.run_id  # the same MLflow run
    assert final.step == 48 and final.thresholds is not None

    a, b = _state(tmp_path / "full" / "last.pt"), _state(ckpt_path)
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-5, f"resumed weights differ from the uninterrupted run by {worst:.2e}"
    moved = max(float((seen.model[k].float() - final.model[k].float()).abs().max()) for k in seen.model)
    assert moved > 1e-3  # the resumed process did train the remaining steps
