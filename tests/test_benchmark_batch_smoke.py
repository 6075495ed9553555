"""Tiny smoke run of benchmarks/batch.py, so it cannot rot. The real figures come from full runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_batch_benchmark_quick(tmp_path):
    out = tmp_path / "batch.json"
    env = {**os.environ, "CREATIVE_QA_HOME": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run(
        [sys.executable, "benchmarks/batch.py", "--quick", "--workers", "2", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    runs = {(row["run"], row["workers"]) for row in result["rows"]}
    assert {("serial loop (old)", 0), ("pipeline", 1), ("pipeline", 2), ("ray (local, start-up incl.)", 2)} <= runs
    assert all(row["creatives_per_s"] > 0 for row in result["rows"])
    # every engine reports the corrupt files as errors, not as a crash
    assert {row["errors"] for row in result["rows"] if "errors" in row} == {result["info"]["corrupt"]}
    assert [m["run"] for m in result["memory"]] == ["memory, 10 creatives", "memory, 100 creatives"]
    assert all(m["peak_rss_mb"] > 0 for m in result["memory"])
    assert "x its slowest-stage limit" in r.stdout
