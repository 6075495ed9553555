"""Tiny smoke runs of the benchmark scripts, so they cannot rot. The real figures come from full runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CREATIVE_QA_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_onnx_throughput_quick(tmp_path):
    out = tmp_path / "tp.json"
    r = _run(["benchmarks/onnx_throughput.py", "--quick", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {row["engine"] for row in rows} >= {"torch (eager, CPU)", "onnxruntime CPU"}
    assert all(row["creatives_per_s"] > 0 for row in rows)


def test_learning_quick_two_arms(tmp_path):
    out = tmp_path / "learning.json"
    r = _run(
        ["benchmarks/learning.py", "--quick", "--arms", "floor,mean_teacher", "--no-label-issues", "--out", str(out)],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [row["arm"] for row in result["rows"]][:2] == ["floor", "mean_teacher"]
    assert all(0 <= row["test_mAP"] <= 1 and 0 <= row["heldout_mAP"] <= 1 for row in result["rows"][:2])
    assert out.with_suffix(".png").is_file()
