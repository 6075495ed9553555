"""Videos train on every sampled frame: a video's tags pool over frames as the scorer pools them."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from creative_qa.media import decode_file
from creative_qa.preprocess import PreprocessSpec, preprocess
from creative_qa.taxonomy import load_taxonomy
from tests.conftest import TINY_OVERRIDES
from training.config import load_config
from training.data import load_manifest_dataset
from training.loop import train
from training.model import build_model, pool_frames

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it


def test_pool_frames_by_hand():
    tags = torch.tensor([[0.0, 1.0], [2.0, -1.0], [5.0, 5.0]])
    q = torch.tensor([0.0, 2.0, 1.0])
    bags = torch.tensor([0, 0, 1])
    top, qp = pool_frames(tags, q, bags, 2, "max")
    assert top.tolist() == [[2.0, 1.0], [5.0, 5.0]]
    # quality: the mean of the frames' probabilities, as the scorer averages them
    expected = (torch.sigmoid(torch.tensor(0.0)) + torch.sigmoid(torch.tensor(2.0))) / 2
    assert torch.allclose(torch.sigmoid(qp), torch.stack([expected, torch.sigmoid(torch.tensor(1.0))]), atol=1e-6)
    lse, _ = pool_frames(tags, q, bags, 2, "lse")
    assert torch.allclose(lse[0], torch.logsumexp(tags[:2], 0)) and torch.allclose(lse[1], tags[2])


def test_model_pools_a_bag_and_only_inside_the_block():
    cfg = load_config("default", TINY_OVERRIDES)
    torch.manual_seed(0)
    model = build_model(cfg.model, 4).eval()
    x = torch.randint(0, 256, (5, cfg.model.views, 64, 64, 3), dtype=torch.uint8)
    tags, q = model(x)
    teacher = copy.deepcopy(model)  # an EMA teacher: a copy of the model, called on the same batch
    apart = build_model(cfg.model, 4).eval()  # a model of another run
    with torch.no_grad(), model.frame_bags(torch.tensor([0, 1, 1, 1, 2]), 3):
        before = model.passes.snapshot()
        pooled, pq = model(x)
        other, _ = model(x[:4])  # another batch (different row count) is left alone
        assert teacher(x)[0].shape == (3, 4) and apart(x)[0].shape == (5, 4)
        counted = model.passes.since(before)
    assert pooled.shape == (3, 4) and other.shape == (4, 4)
    assert torch.allclose(pooled[1], tags[1:4].max(0).values, atol=1e-6)
    assert torch.allclose(torch.sigmoid(pq[1]), torch.sigmoid(q[1:4]).mean(), atol=1e-5)
    assert model(x)[0].shape == (5, 4)
    # passes: the model's and its copy's views count together, a model of another run's apart
    picture_views = cfg.model.views - cfg.model.grid_view
    assert counted == {"train_views": 0, "forward_only_views": (5 + 4 + 5) * picture_views}
    assert apart.passes.snapshot() == (0, 5 * picture_views)
    # a teacher built apart (loaded from a checkpoint) joins the run: it pools and counts with the model
    with model.frame_bags(torch.tensor([0, 1, 1, 1, 2]), 3):
        assert apart.share_run(model)(x)[0].shape == (3, 4)


def test_dataset_serves_every_sampled_frame_of_a_video(tiny_data, tmp_path):
    spec = PreprocessSpec(input_size=32, crops=1, detail_side=64)
    tags = load_taxonomy().tag_names
    src = str(tiny_data["train_labeled"])
    ds, _ = load_manifest_dataset(src, tags, spec, pool=1, cache=tmp_path / "c", workers=1, video_frames=8)
    vids = [i for i, p in enumerate(ds.paths) if p.endswith(".mp4")]
    assert vids and ds.frames is not None
    rows = [vids[0], 0 if vids[0] else 1]
    batch = ds.__getitems__(rows)
    frames = decode_file(ds.paths[vids[0]], max_frames=8)
    assert len(frames) > 1
    assert batch["bag"].tolist() == [0] * len(frames) + [1]
    assert batch["images"].shape[0] == len(frames) + 1 and batch["labels"].shape[0] == 2
    for f, fr in enumerate(frames):
        np.testing.assert_array_equal(batch["images"][f].numpy(), preprocess(fr.pixels, spec))
    # a batch without videos stays one row per creative
    stills = [i for i in range(len(ds)) if i not in vids][:3]
    assert "bag" not in ds.__getitems__(stills)
    # the same frames in RAM
    ram, _ = load_manifest_dataset(src, tags, spec, pool=1, video_frames=8)
    assert torch.equal(ram.__getitems__(rows)["images"], batch["images"])


def test_training_on_video_frames_runs(tiny_data, tmp_path):
    df = pd.read_csv(tiny_data["train_labeled"])
    assert (df["path"].str.endswith(".mp4")).any()
    cfg = load_config(
        "default",
        [
            *TINY_OVERRIDES,
            "method.name=mean_teacher",
            "data.video_frames=8",
            "data.frame_pooling=lse",
            "optim.steps_per_epoch=3",
            f"data.labeled={tiny_data['train_labeled']}",
            f"data.unlabeled={tiny_data['unlabeled']}",
            f"output_dir={tmp_path}",
        ],
    )
    result = train(cfg)
    assert result.checkpoint.is_file() and np.isfinite(result.metrics["val_mAP"])
