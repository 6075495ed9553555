"""Helpers for the serving tests: creatives made on the fly, a live uvicorn server on loopback."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image


def png_bytes(seed: int = 0, size: tuple[int, int] = (90, 120)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def video_bytes(seconds: float, fps: int = 10, w: int = 64, h: int = 48, static: bool = False) -> bytes:
    """An H.264 MP4 of a bar growing across the frame (``static``: one still scene, a tiny file)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        s.codec_context.time_base = Fraction(1, fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        still = None
        for i in range(int(seconds * fps)):
            if still is None or not static:
                a = np.full((h, w, 3), 90, np.uint8)
                a[: h // 2, : (i % w) + 1] = 220
                still = av.VideoFrame.from_ndarray(a, format="rgb24").reformat(format="yuv420p")
            still.pts = i
            for p in s.encode(still):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_ready(url: str, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


@pytest.fixture(scope="session")
def tiny_onnx_v8(tiny_onnx, tmp_path_factory) -> Path:
    """The tiny model re-labelled as version 8 (a 'new' model to reload)."""
    import onnx

    m = onnx.load(str(tiny_onnx))
    for p in m.metadata_props:
        if p.key == "creative_qa.model_version":
            p.value = "8"
    out = tmp_path_factory.mktemp("onnx8") / "tiny8.onnx"
    onnx.save(m, str(out))
    return out
