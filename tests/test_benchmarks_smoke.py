"""Tiny smoke runs of the benchmark scripts, so they cannot rot. The real figures come from full runs."""

import json

import pandas as pd
import pytest

from creative_qa.taxonomy import load_taxonomy
from tests.benchmark_runner import run_benchmark as _run

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it


def test_onnx_throughput_quick(tmp_path):
    out = tmp_path / "tp.json"
    r = _run(["benchmarks/onnx_throughput.py", "--quick", "--out", str(out)], tmp_path, tmpdir=tmp_path / "tmp")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not list((tmp_path / "tmp").rglob("*.onnx"))  # no exported model is left in a temp dir per run
    rows = json.loads(out.read_text())["rows"]
    assert {row["engine"] for row in rows} >= {"torch (eager, CPU)", "onnxruntime CPU"}
    assert all(row["creatives_per_s"] > 0 for row in rows)


def test_learning_quick_two_arms(tmp_path):
    out = tmp_path / "learning.json"
    r = _run(
        [
            "benchmarks/learning.py",
            "--quick",
            "--arms",
            "floor,synthesis_forward",
            "--no-label-issues",
            "--out",
            str(out),
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    # floor runs every seed; synthesis_forward is the default recipe, so it runs every seed too and is reported twice
    assert [(row["arm"], row["seed"]) for row in result["rows"]] == [
        ("floor", 0),
        ("floor", 1),
        ("synthesis_forward", 0),
        ("synthesis_forward", 1),
        ("default", 0),
        ("default", 1),
    ]
    for row in result["summary"]:
        assert all(0 <= row[f"{split}_mAP"] <= 1 for split in ("test", "heldout", "foreign")), row
        assert row["train_views"] > 0 and row["seeds"] == 2
    # synthesis trains on degraded copies of pool creatives besides the labeled batch
    assert result["summary"][1]["train_views"] > result["summary"][0]["train_views"]
    noise = {row["tag"]: row for row in result["label_noise"]}
    assert set(noise) == set(load_taxonomy().tag_names)
    assert out.with_suffix(".png").is_file()


def test_strong_view_quick(tmp_path):
    out = tmp_path / "strong_view.json"
    r = _run(["benchmarks/strong_view.py", "--quick", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["tag"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {*load_taxonomy().tag_names, "mean"}
    assert all(0 <= row["before"] <= 1 and 0 <= row["after"] <= 1 for row in rows.values())


def test_scale_sweep_quick(tmp_path):
    out = tmp_path / "sweep.json"
    r = _run(["benchmarks/scale_sweep.py", "--quick", "--seeds", "2", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["info"]["sizes"] == [64, 128] and result["info"]["seeds"] == [0, 1]
    assert len(set(result["info"]["run_ids"])) == 2  # one model per seed
    rows = {row["tag"]: row for row in result["rows"]}
    assert set(rows) <= set(load_taxonomy().tag_names) and len(rows) >= 6  # tags with a positive at every seed
    for row in rows.values():
        assert 0 <= row["ap_64"] <= 1 and 0 <= row["ap_128"] <= 1
        assert abs(row["worst_fall"] - (row["ap_64"] - row["ap_128"])) < 1e-9  # the fall of the seeds' mean AP
        assert len(row["fall_by_seed"]) == 2
        assert abs(sum(row["fall_by_seed"]) / 2 - row["worst_fall"]) < 1e-9  # with two sizes, the mean of the falls
    assert result["failing"] == [t for t, row in rows.items() if row["worst_fall"] > 0.05]
    # the real-photo split (benchmarks/realphoto.py, 24 creatives in --quick) next to the synthetic sizes
    real = result["realphoto"]
    assert result["info"]["realphoto_n"] == 24 and real["n"] == 24
    assert set(real["bins"]) == {"320-540", "540-800", "800-1080"} and sum(real["bins"].values()) == 24
    assert len(real["per_seed"]) == 2 and 0 <= real["defect_mAP"] <= 1
    assert 0 <= result["mean"]["ap_real"] <= 1
    cells = [v for row in rows.values() for k, v in row.items() if k.startswith("ap_real") and v is not None]
    assert any(row["ap_real"] is not None for row in rows.values()) and all(0 <= v <= 1 for v in cells)
    assert "real photos" in r.stdout and "r800-1080" in r.stdout
    # the same designs at both sizes: the test creatives' labels agree but for whole-pixel rounding
    home = tmp_path / "bench" / "scale_sweep"
    small, large = (pd.read_csv(home / f"test-{s}" / "seed1" / "test.csv") for s in (64, 128))
    tags = load_taxonomy().tag_names
    assert list(small["path"]) == list(large["path"])
    assert (small[tags].to_numpy() != large[tags].to_numpy()).mean() < 0.05


def test_preprocess_quick(tmp_path):
    out = tmp_path / "pp.json"
    args = ["benchmarks/preprocess.py", "--quick", "--formats", "jpeg,png", "--batch", "6", "--out", str(out)]
    r = _run(args, tmp_path, tmpdir=tmp_path / "tmp")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not list((tmp_path / "tmp").glob("cqa-preprocess-*"))  # the creatives and models it made are gone
    result = json.loads(out.read_text())
    assert {(row["format"], row["short_side"]) for row in result["rows"]} == {
        (f, s) for f in ("jpeg", "png") for s in (256, 1080)
    }
    assert all(row["total_ms_full"] > row["decode_ms"] > 0 and row["total_ms_reduced"] > 0 for row in result["rows"])
    assert [row["path"] for row in result["batch"]] == ["full size (reduce=0)", "reduced (reduce=1)"]
    assert all(row["creatives_per_s"] > 0 for row in result["batch"])


def test_active_quick(tmp_path):
    out = tmp_path / "active.json"
    r = _run(["benchmarks/active.py", "--quick", "--arms", "label_next,random", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    rows = {(row["arm"], row["seed"]): row for row in res["rows"]}
    assert set(rows) == {("start", 0), ("label_next", 0), ("random", 0)}
    for row in rows.values():
        assert all(0 <= row[f"{s}_mAP"] <= 1 for s in ("test", "foreign", "realphoto"))
    # each arm added exactly its labels to the same start: the start's rows, then --add (10) more
    for arm in ("label_next", "random"):
        manifest = next((tmp_path / "bench").rglob(f"active-n40-heavy-clean-{arm}-s0.csv"))
        assert len(pd.read_csv(manifest)) == 40 + 10
    iv = res["intervals"]["label_next"]["test"]
    assert iv["ci95"][0] <= iv["ci95"][1] and "label_next - random (paired 95 % interval): test" in r.stdout


def test_measures_quick(tmp_path):
    out = tmp_path / "measures.json"
    r = _run(["benchmarks/measures.py", "--quick", "--variants", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    from training.measures import NAMES

    splits = {row["split"] for row in res["rows"]}
    assert splits == {"pool", "test", "realphoto"} and set(res["variants"]) == splits
    for row in res["rows"]:  # every measurement's AP for every defect tag, a share in [0, 1] (or NaN: no positive)
        assert all(row[n] != row[n] or 0 <= row[n] <= 1 for n in NAMES)
    real_lb = next(row for row in res["rows"] if row["split"] == "realphoto" and row["tag"] == "letterboxed")
    assert real_lb["bar_share_strict"] > real_lb["prior"]  # bars rank letterboxed photographs above their prior
