"""Tiny smoke run of benchmarks/batch.py, so it cannot rot. The real figures come from full runs."""

import json

import pytest

from tests.benchmark_runner import run_benchmark

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it


def test_batch_benchmark_quick(tmp_path):
    out = tmp_path / "batch.json"
    r = run_benchmark(["benchmarks/batch.py", "--quick", "--workers", "2", "--out", str(out)], tmp_path)
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
