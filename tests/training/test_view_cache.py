"""The on-disk view cache: same views as decoding in RAM, built once and reused, keyed by files and spec."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from creative_qa.manifest import read_manifest
from creative_qa.preprocess import PreprocessSpec
from creative_qa.taxonomy import load_taxonomy
from training.data import (
    StreamBatches,
    build_view_cache,
    epoch_batches,
    load_manifest_dataset,
    load_views,
)

SPEC = PreprocessSpec(input_size=32, crops=2, detail_side=64)


@pytest.fixture(scope="module")
def paths(tiny_data) -> list[str]:
    return read_manifest(str(tiny_data["train_labeled"]))["abspath"].tolist()[:24]


def test_parallel_cache_holds_exactly_the_in_ram_views(paths, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    files = [*paths[:10], str(bad), *paths[10:]]
    ram, ok_ram, _ = load_views(files, SPEC, pool=2)
    store, ok, rep = build_view_cache(files, SPEC, 2, tmp_path / "c", workers=2)
    assert not rep.cache_hit and rep.loaded == len(paths)
    assert [p for p, _ in rep.skipped] == [str(bad)]
    np.testing.assert_array_equal(ok, ok_ram)
    assert store.shape == ram.shape
    np.testing.assert_array_equal(store.numpy(), ram)
    # int, slice and index-array reads all agree with the array
    np.testing.assert_array_equal(store[3].numpy(), ram[3])
    np.testing.assert_array_equal(store[5:9].numpy(), ram[5:9])
    idx = np.array([7, 0, 7, 22])
    np.testing.assert_array_equal(store[torch.from_numpy(idx)].numpy(), ram[idx])


def test_cache_is_reused_and_rebuilt_when_a_file_or_the_spec_changes(paths, tmp_path):
    files = [str(tmp_path / Path(p).name) for p in paths[:6]]
    for src, dst in zip(paths[:6], files, strict=True):
        Path(dst).write_bytes(Path(src).read_bytes())
    root = tmp_path / "c"
    _, _, first = build_view_cache(files, SPEC, 0, root, workers=1)
    _, _, again = build_view_cache(files, SPEC, 0, root, workers=1)
    assert not first.cache_hit and again.cache_hit and again.cache == first.cache
    _, _, other_pool = build_view_cache(files, SPEC, 1, root, workers=1)
    other_spec = build_view_cache(files, PreprocessSpec(32, 1, 64), 0, root, workers=1)[2]
    assert not other_pool.cache_hit and not other_spec.cache_hit
    st = os.stat(files[2])
    os.utime(files[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "edited"
    _, _, touched = build_view_cache(files, SPEC, 0, root, workers=1)
    assert not touched.cache_hit and touched.cache != first.cache
    assert len({first.cache, other_pool.cache, other_spec.cache, touched.cache}) == 4


def test_dataset_from_the_cache_matches_the_in_ram_dataset(tiny_data, tmp_path):
    tags = load_taxonomy().tag_names
    src = str(tiny_data["train_labeled"])
    disk, _ = load_manifest_dataset(src, tags, SPEC, pool=2, cache=tmp_path / "c", workers=1)
    ram, _ = load_manifest_dataset(src, tags, SPEC, pool=2)
    assert len(disk) == len(ram) and disk.paths == ram.paths
    sub_d, sub_r = disk.subset(np.array([5, 1, 9])), ram.subset(np.array([5, 1, 9]))
    batch_d, batch_r = sub_d.__getitems__([2, 0]), sub_r.__getitems__([2, 0])
    for k in ("images", "crop_pool", "labels", "quality", "index"):
        assert torch.equal(torch.nan_to_num(batch_d[k]), torch.nan_to_num(batch_r[k])), k
    assert batch_d["images"].shape == (2, SPEC.views, 32, 32, 3) and batch_d["crop_pool"].shape[1] == 2
    assert torch.equal(sub_d[1]["images"], ram.views[1])


def test_epoch_order_is_resumable_and_sharded():
    one = epoch_batches(50, 8, 10, seed=3, epoch=2)
    assert len(one) == 10 and all(len(b) == 8 for b in one)
    assert len(set(np.concatenate(one[:6]).tolist())) == 48  # one pass (6 batches) has no repeats
    assert [b.tolist() for b in one] == [b.tolist() for b in epoch_batches(50, 8, 10, seed=3, epoch=2)]
    assert one[0].tolist() != epoch_batches(50, 8, 10, seed=3, epoch=3)[0].tolist()
    r0, r1 = (epoch_batches(50, 4, 10, seed=3, epoch=2, world=2, rank=r) for r in (0, 1))
    for g, a, b in zip(one, r0, r1, strict=True):  # two ranks of batch 4 = one process of batch 8
        assert np.concatenate([a, b]).tolist() == g.tolist()
    stream = iter(StreamBatches(30, 8, seed=1))
    seq = [next(stream).tolist() for _ in range(9)]
    resumed = iter(StreamBatches(30, 8, seed=1, start=5))
    assert [next(resumed).tolist() for _ in range(4)] == seq[5:]
