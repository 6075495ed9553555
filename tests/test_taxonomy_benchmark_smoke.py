"""Tiny smoke run of benchmarks/taxonomy_change.py, so it cannot rot. The real figures come from full runs."""

import json

import pytest

from creative_qa.taxonomy import load_taxonomy
from tests.benchmark_runner import run_benchmark

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it


def test_taxonomy_change_quick(tmp_path):
    out = tmp_path / "taxonomy.json"
    r = run_benchmark(
        ["benchmarks/taxonomy_change.py", "--quick", "--arms", "warm,v1_alone", "--out", str(out)], tmp_path
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "carried_mAP" in r.stdout and "photo_background" in r.stdout  # the tables
    result = json.loads(out.read_text())
    rows = {row["arm"]: row for row in result["rows"]}
    assert set(rows) == {"warm", "v1_alone"}
    assert 0 <= rows["warm"]["carried_mAP"] <= 1 and rows["warm"]["wall_s"] > 0
    # the v1 model cannot score the added tags; the warm-started v2 model scores every tag it can
    assert "photo_background" not in rows["v1_alone"]["per_tag_AP"]
    assert set(rows["warm"]["per_tag_AP"]) <= set(load_taxonomy("v2").tag_names)
    # the real-photo split (benchmarks/realphoto.py, 24 creatives in --quick): v1 labels migrated, blur split
    # from the builder's `methods`, the added tags unlabelled
    real = result["realphoto"]
    assert real["n"] == 24 and "real photos" in r.stdout
    assert {"compression_artifacts", "bad_exposure", "motion_blur", "defocus_blur"} <= set(real["tags_labelled"])
    assert not {"photo_background", "striped_background", "letterboxed"} & set(real["tags_labelled"])
    assert real["blur_children_from_methods"]["unresolved"] == 0
    for arm in ("warm", "v1_alone"):
        assert 0 <= rows[arm]["real_carried_mAP"] <= 1
        ap = rows[arm]["real_per_tag_AP"]
        assert ap and set(ap) <= set(real["tags_labelled"]) and all(0 <= v <= 1 for v in ap.values())
