"""Tiny smoke runs of the training-scale and video-frame benchmarks (the real figures come from full runs)."""

import json
from pathlib import Path

import pytest

from tests.benchmark_runner import run_benchmark

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it


def _run(args: list[str], home: Path, tmpdir: Path | None = None):
    return run_benchmark(args, home, timeout=1200, tmpdir=tmpdir)


def test_training_scale_quick(tmp_path):
    out = tmp_path / "scale.json"
    r = _run(["benchmarks/training_scale.py", "--quick", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert {(a["n"], a["mode"]) for a in res["arms"]} == {(60, "ram"), (60, "disk"), (240, "ram"), (240, "disk")}
    assert all(a["peak_rss_mb"] > 0 and a["train_creatives_per_s"] > 0 for a in res["arms"])
    assert [b["workers"] for b in res["cache_build"]][0] == 1
    assert [d["arm"].split()[0] for d in res["ddp"]] == ["one", "DDP"]


def test_video_frames_quick(tmp_path):
    out = tmp_path / "video.json"
    r = _run(["benchmarks/video_frames.py", "--quick", "--out", str(out)], tmp_path, tmpdir=tmp_path / "tmp")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not list((tmp_path / "tmp").rglob("*.onnx"))  # no exported model is left in a temp dir per run
    rows = json.loads(out.read_text())["rows"]
    assert [row["arm"] for row in rows] == ["middle frame", "every sampled frame (max)"]
    assert all(0 <= row["video_mAP"] <= 1 and row["per_tag_AP"] for row in rows)
