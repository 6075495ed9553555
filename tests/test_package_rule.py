"""DESIGN.md's rule: creative_qa/ and serving/ never import torch, timm or training code."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["creative_qa.scorer", "creative_qa.batch", "creative_qa.cli", "creative_qa.synth", "serving.main"]
)
def test_core_and_serving_import_without_torch(module):
    code = (
        f"import sys, {module}; bad = [m for m in ('torch', 'timm', 'training', 'torchvision') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{module} pulled in {r.stdout.strip()} {r.stderr[-500:]}"


def test_cli_score_reports_a_bad_file_with_exit_status(tiny_onnx, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    r = subprocess.run(
        [sys.executable, "-m", "creative_qa.cli", "score", str(bad), "--model", str(tiny_onnx)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert "not a decodable image" in r.stdout
