"""The server's peak memory stays under 1 GB for the creatives that used to take it to 5-14 GB.

The server runs in its own process (as `creative-qa serve` does); its peak resident set
is read from the kernel's high-water mark (VmHWM), so nothing between samples is missed.
"""

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.serving.conftest import free_port, video_bytes, wait_ready

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

ROOT = Path(__file__).resolve().parents[2]
GB = 1 << 30


def big_jpeg(side: int = 7_900) -> bytes:
    """A ~1 MB JPEG of side x side pixels (a gradient with shapes: compresses like a design)."""
    img = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng(0)
    for _ in range(200):
        x, y = (int(v) for v in rng.integers(0, side, 2))
        r = int(rng.integers(20, 400))
        draw.ellipse([x, y, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=60)
    return buf.getvalue()


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


@pytest.fixture(scope="module")
def server(tiny_onnx, tmp_path_factory):
    port = free_port()
    home = tmp_path_factory.mktemp("serve-home")
    env = {**os.environ, "CREATIVE_QA_HOME": str(home), "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "creative_qa.cli", "serve", "--model", str(tiny_onnx), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_sixteen_concurrent_7900px_jpegs_are_scored_under_1gb(server):
    url, pid = server
    data = big_jpeg()
    assert 0.5e6 < len(data) < 2.5e6 and Image.open(io.BytesIO(data)).size == (7_900, 7_900)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as h:
            return await asyncio.gather(
                *(h.post("/v1/score", files={"file": (f"{i}.jpg", data, "image/jpeg")}) for i in range(16))
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 16
    assert len({r.json()["quality"] for r in responses}) == 1  # the same creative, the same score
    assert peak_rss(pid) < GB, f"server peak RSS {peak_rss(pid) / GB:.2f} GB"


def test_a_minute_of_720p_video_is_scored_under_1gb(server):
    url, pid = server
    data = video_bytes(60, fps=30, w=1280, h=720, static=True)  # the 75 KB, 1,800-frame case
    assert len(data) < 200_000
    r = httpx.post(f"{url}/v1/score", files={"file": ("still.mp4", data, "video/mp4")}, timeout=120)
    assert r.status_code == 200, r.text
    times = [f["time_s"] for f in r.json()["frames"]]
    assert len(times) == 8 and times[0] < 5 and times[-1] > 55  # samples span the whole minute
    assert peak_rss(pid) < GB, f"server peak RSS {peak_rss(pid) / GB:.2f} GB"
