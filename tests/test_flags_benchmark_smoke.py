"""Smoke test of benchmarks/flags.py: the figures it prints are the scorer's own flags, and it names the tags
that break a promise."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from creative_qa.taxonomy import load_taxonomy
from tests.conftest import WEAK_TAGS

ROOT = Path(__file__).resolve().parents[1]


def test_flags_benchmark_reports_the_policy_and_names_broken_promises(tiny_onnx_weak, tiny_data, tmp_path):
    out = tmp_path / "flags.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "flags.py"), "--model", str(tiny_onnx_weak),
         "--manifest", str(tiny_data["test"]), "--realphoto-n", "0", "--out", str(out)],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert f"{len(WEAK_TAGS)} of {len(load_taxonomy())} tags unreliable" in r.stdout
    m = json.loads(out.read_text())["splits"][Path(tiny_data["test"]).stem]
    labels = pd.read_csv(tiny_data["test"])
    for t, v in m["tags"].items():
        assert v["flagged"] == v["flagged_by_scorer"], t  # the policy applied here is the scorer's
        if t in WEAK_TAGS:
            assert v["reliable"] == 0 and v["flagged"] == 0
        else:  # thresholds of 1e-4: every creative flagged, precision = the true share
            assert v["flagged"] == 1.0 and abs(v["true"] - labels[t].mean()) < 1e-9
    # a reliable tag flagged everywhere is over-flagged wherever under half the creatives have it
    assert set(m["over_flagged"]) == {t for t, v in m["tags"].items() if v["reliable"] and v["true"] < 0.5}
    assert set(m["below_target"]) == {t for t, v in m["tags"].items() if v["reliable"] and v["true"] < 0.8}
    assert "reliable tags flagged on more than 2x their true share: " in r.stdout
