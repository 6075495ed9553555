"""Run a benchmark script the way a user would, in its own process and project home (for the smoke tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(
    args: list[str], home: Path, timeout: float = 900, tmpdir: Path | None = None
) -> subprocess.CompletedProcess:
    """``python <args>`` from the repository root, with ``home`` as the project home and no outside
    MLflow server or Ray cluster; ``tmpdir`` as its TMPDIR when given (to check it leaves nothing there)."""
    env = {**os.environ, "CREATIVE_QA_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    for var in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(var, None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
