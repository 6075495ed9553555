"""The guide's example method (docs/adding-a-method.md) trains as written, from its own file."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlflow
from tests.conftest import TINY_OVERRIDES
from training.config import load_config
from training.loop import train

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "adding-a-method.md"
STEPS = 3


def test_the_guides_example_method_trains_from_its_file(tiny_data, tmp_path, fresh_home):
    code = re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.S).group(1)
    path = tmp_path / "entropy_min.py"
    path.write_text(code)
    cfg = load_config("default", [
        *TINY_OVERRIDES, f"method.name={path}", "method.params={weight: 0.1}", "model.native_crops=1",
        f"optim.steps_per_epoch={STEPS}", f"data.labeled={tiny_data['train_labeled']}",
        f"data.unlabeled={tiny_data['unlabeled']}", "data.video_frames=1", "device=cpu",
    ])  # fmt: skip
    result = train(cfg)
    assert np.isfinite(result.metrics["val_mAP"])
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["method"] == "entropy_min"
    # every step forwarded and backpropagated a labeled and an unlabeled batch (the pool is smaller than a
    # batch: all of it) through the picture views
    picture_views = cfg.model.views - cfg.model.grid_view
    per_step = cfg.optim.batch_size + min(cfg.optim.batch_size, len(pd.read_csv(tiny_data["unlabeled"])))
    assert result.passes["train_views"] == STEPS * per_step * picture_views
    assert run.data.metrics["passes_train_views"] == result.passes["train_views"]
