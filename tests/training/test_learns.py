"""Training learns: on clean labels a few dozen steps lower the loss and rank the test set's tags
better than the same model untrained and better than each tag's positive rate (what a ranking by
chance scores)."""

import numpy as np
import pandas as pd
import pytest
import torch

from creative_qa.synth import SynthConfig, generate_dataset
from creative_qa.taxonomy import load_taxonomy
from tests.conftest import TINY_OVERRIDES
from training.checkpoint import Checkpoint
from training.config import load_config
from training.data import load_manifest_dataset
from training.loop import cache_root, spec_of, train
from training.losses import masked_bce, quality_loss
from training.model import build_model, config_of

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

TAGS = load_taxonomy().tag_names
STEPS = 40


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory):
    """128 labeled and ~80 test creatives, every label true (no miss, no false positive, no blank);
    more defects than the default mix, so every tag has positives in the test split."""
    cfg = SynthConfig(size=96, video_frac=0.0, p_clean=0.1, p_defect=0.2)
    return generate_dataset(
        tmp_path_factory.mktemp("clean"),
        n_labeled=128,
        n_unlabeled=0,
        n_test=64,
        seed=0,
        cfg=cfg,
        miss_rate=0.0,
        fp_rate=0.0,
        blank_rate=0.0,
        quality_noise=0.0,
        workers=1,
        progress=False,
    )


def _loss_on(ckpt_path, ds) -> float:
    """The training loss (tags + quality) of a checkpoint's trained weights over a whole data set, unaugmented."""
    ckpt = Checkpoint.load(ckpt_path)
    model = build_model(config_of(ckpt).model, len(TAGS))
    model.load_state_dict(ckpt.model)
    model.eval()
    with torch.no_grad():
        tags, quality = model(ds.views[0 : len(ds)])
    return float(masked_bce(tags, ds.labels) + quality_loss(quality, ds.quality))


def test_supervised_training_on_clean_labels_learns(clean_data, tmp_path):
    base = [
        *TINY_OVERRIDES,
        "method.params={augment: weak}",  # flips only: the fewest steps to a clear signal
        # NOTE: the training steps are what is measured: the untrained baseline would get the head refit too (a linear
        # probe of random features, the grid view and the measurements ranks well already); tests/training/test_refit.py
        "head.refit=false",
        f"data.labeled={clean_data['train_labeled']}",
        f"data.test={clean_data['test']}",
    ]
    # The same recipe and seed without a step: the model the trained one started from.
    before_cfg = load_config("demo", [*base, "optim.epochs=0", f"output_dir={tmp_path / 'before'}"])
    before = train(before_cfg)
    after = train(load_config("demo", [*base, f"optim.steps_per_epoch={STEPS}", f"output_dir={tmp_path / 'after'}"]))
    assert Checkpoint.load(after.checkpoint).step == STEPS

    # The loss it minimises falls (gradient ascent multiplies it instead).
    labeled, _ = load_manifest_dataset(
        str(clean_data["train_labeled"]), TAGS, spec_of(before_cfg), cache=cache_root(before_cfg)
    )
    assert not torch.isnan(labeled.labels).any()  # clean: every label known
    loss_before, loss_after = _loss_on(before.checkpoint, labeled), _loss_on(after.checkpoint, labeled)
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)

    # Test AP, over the tags with positives and negatives in the test split, against two baselines.
    test = pd.read_csv(clean_data["test"])
    ap = {t[len("test_AP_") :]: v for t, v in after.metrics.items() if t.startswith("test_AP_")}
    assert len(ap) >= 12, sorted(ap)
    rate = {t: float(test[t].mean()) for t in ap}
    summary = {t: (round(rate[t], 2), round(before.metrics[f"test_AP_{t}"], 2), round(ap[t], 2)) for t in ap}
    assert after.metrics["test_mAP"] > before.metrics["test_mAP"] + 0.1, summary
    assert after.metrics["test_mAP"] > np.mean(list(rate.values())) + 0.15, summary
    # Per tag, a ranking by chance scores about the tag's positive rate: most tags must do clearly better.
    beaten = [t for t in ap if ap[t] > rate[t] + 0.1]
    assert len(beaten) >= len(ap) / 2, summary
