"""The generator labels every built-in taxonomy from what it rendered; a tag it does not know is blank."""

from __future__ import annotations

import numpy as np
import pandas as pd

from creative_qa.manifest import read_manifest
from creative_qa.synth import SynthConfig, generate_dataset, make_creative
from creative_qa.taxonomy import Tag, Taxonomy, load_taxonomy
from creative_qa.taxonomy_map import load_mapping

CFG = SynthConfig(size=96, video_frac=0.0)


def test_an_unknown_tag_is_blank_never_zero(tmp_path):
    v1 = load_taxonomy()
    tax = Taxonomy("t", "x", (*v1.tags, Tag("lens_flare")))
    paths = generate_dataset(tmp_path, n_labeled=6, n_unlabeled=0, n_test=4, seed=1, cfg=CFG, taxonomy=tax, workers=1)
    for name in ("train_labeled_clean", "test"):
        df = pd.read_csv(paths[name])
        assert df["lens_flare"].isna().all()
        assert df[v1.tag_names].notna().all().all()  # the tags it knows are all labeled in the clean files


def test_v2_labels_follow_from_the_render_and_agree_with_migrated_v1_labels():
    v1, v2 = load_taxonomy("v1"), load_taxonomy("v2")
    rng = np.random.default_rng(0)
    creatives = [make_creative(rng, CFG, {"blurry": 0.012}) for _ in range(12)]
    creatives += [make_creative(rng, CFG) for _ in range(60)]
    for c in creatives:
        assert set(v1.tag_names) | set(v2.tag_names) <= set(c.labels)
        if c.labels["blurry"]:  # a positive blur is exactly one of the two kinds
            assert c.labels["motion_blur"] + c.labels["defocus_blur"] == 1
        else:
            assert c.labels["motion_blur"] == c.labels["defocus_blur"] == 0
        assert c.labels["bad_exposure"] == max(c.labels["overexposed"], c.labels["underexposed"])
        assert c.labels["compression_artifacts"] == c.labels["jpeg_artifacts"]
    kinds = {(c.labels["motion_blur"], c.labels["defocus_blur"]) for c in creatives[:12]}
    assert kinds == {(1, 0), (0, 1)}  # both kernels occur
    assert 0 < sum(c.labels["photo_background"] for c in creatives) < len(creatives)
    assert 0 < sum(c.labels["striped_background"] for c in creatives) < len(creatives)

    # Migrating the v1 labels agrees with the v2 truth wherever the migration is not blank.
    m = load_mapping("v1_to_v2")
    old = np.array([[c.labels[t] for t in v1.tag_names] for c in creatives], dtype=np.float32)
    truth = np.array([[c.labels[t] for t in v2.tag_names] for c in creatives], dtype=np.float32)
    new = m.migrate(old)
    known = ~np.isnan(new)
    assert (new[known] == truth[known]).all()
    assert np.isnan(new[:, v2.index("motion_blur")]).sum() == sum(c.labels["blurry"] for c in creatives)


def test_a_v2_data_set_reads_with_the_v2_taxonomy(tmp_path):
    v2 = load_taxonomy("v2")
    paths = generate_dataset(tmp_path, n_labeled=4, n_unlabeled=0, n_test=4, seed=2, cfg=CFG, taxonomy=v2, workers=1)
    df = read_manifest(paths["test"])
    assert list(df.columns[1 : 1 + len(v2)]) == v2.tag_names
    assert "blurry" not in df.columns and df[v2.tag_names].notna().all().all()
