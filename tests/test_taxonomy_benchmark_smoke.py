"""Tiny smoke run of benchmarks/taxonomy_change.py, so it cannot rot. The real figures come from full runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

from creative_qa.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parents[1]


def test_taxonomy_change_quick(tmp_path):
    out = tmp_path / "taxonomy.json"
    env = {**os.environ, "CREATIVE_QA_HOME": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    r = subprocess.run(
        [sys.executable, "benchmarks/taxonomy_change.py", "--quick", "--arms", "warm,v1_alone", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
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
