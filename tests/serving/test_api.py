import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from creative_qa.scorer import Scorer
from serving.main import create_app
from serving.settings import Settings


def _png(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tiny_onnx):
    app = create_app(Settings(model=str(tiny_onnx), max_upload_mb=0.5))
    with TestClient(app) as c:
        yield c


def test_health_ready_and_model(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    info = client.get("/v1/model").json()
    assert info["version"] == "7" and "CPUExecutionProvider" in info["providers"]
    assert len(info["taxonomy"]["tags"]) == 14


def test_score_multipart_and_raw_body_agree_with_the_scorer(client, tiny_onnx):
    data = _png()
    r = client.post("/v1/score", files={"file": ("a.png", data, "image/png")})
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"quality", "tags", "flags", "model"}
    raw = client.post("/v1/score", content=data, headers={"content-type": "image/png"})
    assert raw.status_code == 200 and raw.json() == body
    assert body == Scorer(tiny_onnx).score_bytes(data)


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"files": {"file": ("a.txt", b"hello", "text/plain")}}, 415),
        ({"files": {"file": ("a.png", b"this is not a png", "image/png")}}, 422),
        ({"files": {"file": ("a.png", b"", "image/png")}}, 422),
        ({"files": {"other": ("a.png", b"x", "image/png")}}, 422),
        ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415),
        ({"content": b"\x00" * 10, "headers": {"content-type": "image/png"}}, 422),
        ({"files": {"file": ("big.png", b"\x89PNG" + b"0" * 600_000, "image/png")}}, 413),
        ({"content": b"0" * 700_000, "headers": {"content-type": "image/jpeg"}}, 413),
    ],
)
def test_bad_uploads_get_a_4xx_with_a_reason(client, kwargs, status):
    r = client.post("/v1/score", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_unloadable_model_keeps_the_process_up_but_not_ready(tmp_path):
    app = create_app(Settings(model=str(tmp_path / "missing.onnx")))
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and "missing.onnx" in r.json()["detail"]
        assert c.post("/v1/score", content=_png(), headers={"content-type": "image/png"}).status_code == 503
