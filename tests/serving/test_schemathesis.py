"""The published OpenAPI spec, fuzzed by Schemathesis against a live server, finishes clean.

Schemathesis runs with its default number of examples (fewer miss, for one, a batch of more files
than the spec's maxItems); the seed is fixed so that a failure reproduces.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serving.main import create_app
from serving.settings import Settings
from tests.serving.conftest import live_server

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

CONFIG = Path(__file__).with_name("schemathesis.toml")


def _st() -> list[str]:
    exe = Path(sys.executable).with_name("st")
    return [str(exe)] if exe.is_file() else [shutil.which("st") or "st"]


def test_schemathesis_run_against_the_spec_is_clean(tiny_onnx, tmp_path):
    app = create_app(Settings(model=str(tiny_onnx), admin_token="tok", max_upload_mb=1))
    with live_server(app) as url:
        spec = httpx.get(f"{url}/openapi.json").json()
        assert "requestBody" in spec["paths"]["/v1/score"]["post"]
        r = subprocess.run(
            [
                *_st(),
                "--config-file",
                str(CONFIG),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--seed",
                "1",
                "--workers",
                "1",
                "--generation-database",
                "none",
                "--no-color",
                "-H",
                "Authorization: Bearer tok",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "No issues found" in r.stdout
    assert "7 selected / 7 total" in r.stdout
