"""Tiny smoke run of benchmarks/api_load.py, so it cannot rot (the real figures come from full runs)."""

import json

import pytest

from tests.benchmark_runner import run_benchmark

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it


def test_serving_benchmark_quick_runs_every_mode(tmp_path):
    out = tmp_path / "serving.json"
    r = run_benchmark(["benchmarks/api_load.py", "--quick", "--concurrency", "1,4", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["errors"] == {}
    modes = {(row["mode"], row["concurrency"]) for row in result["rows"]}
    assert modes == {(m, c) for m in ("api-batching", "api-nobatch", "in-process", "mlflow-serve") for c in (1, 4)}
    assert all(row["n_non_200"] == 0 and row["req_per_s"] > 0 for row in result["rows"])
    # CPU per request: the servers' own (scoring happens there), none for in-process, whose scoring is this process's
    for row in result["rows"]:
        assert (row["cpu_ms_per_req_server"] is None) == (row["mode"] == "in-process")
        if row["mode"] != "mlflow-serve":
            scorer_side = row["cpu_ms_per_req_server"] or row["cpu_ms_per_req_this_process"]
            assert scorer_side > 0.2, row  # decoding, preprocessing and the model cost something
    assert result["api"] == "api-nobatch"  # the server's default on a CPU machine: no dynamic batching
    assert result["ratios"]["4"]["api/in-process"] > 0 and result["ratios"]["4"]["api/mlflow-serve"] > 0
    assert 0 < result["memory"]["api-batching"]["vmhwm_mb"] < 1024
    assert "api/in-process" in r.stdout and "server peak memory" in r.stdout
