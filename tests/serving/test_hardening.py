"""Edge cases found in review: uploads without a length, a closing engine, insane models, leftover downloads."""

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.engine import QueueFull, smoke_test
from serving.main import create_app
from serving.settings import Settings
from tests.serving.conftest import live_server, png_bytes


def _send_chunked_until_answered(base: str, path: str, field: bytes, total: int) -> tuple[bytes, int]:
    """POST a chunked multipart body over a raw socket until the server answers; returns (status line, bytes sent)."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(base)
    boundary = b"cqa-boundary"
    part = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + field + b'"; filename="big.png"\r\n'
    part += b"Content-Type: image/png\r\n\r\n"
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {u.hostname}\r\nTransfer-Encoding: chunked\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary="
            + boundary
            + b"\r\n\r\n"
        )
        sent, chunk = 0, part + b"\0" * (64 * 1024 - len(part))
        sock.settimeout(0.05)
        while sent < total:
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            chunk = b"\0" * (64 * 1024)
            try:
                answer = sock.recv(4096)
                if answer:
                    return answer.split(b"\r\n")[0], sent
            except TimeoutError:
                pass
        sock.settimeout(10)
        return sock.recv(4096).split(b"\r\n")[0], sent


@pytest.mark.parametrize("route,field", [("/v1/score", b"file"), ("/v1/score/batch", b"files")])
def test_chunked_multipart_over_the_limit_is_cut_off_with_413(tiny_onnx, route, field):
    """No Content-Length (chunked): the body is counted as it streams and refused near the limit, not spooled
    to disk whole first (64 MiB offered, 0.25 MiB allowed)."""
    app = create_app(Settings(model=str(tiny_onnx), max_upload_mb=0.25, max_batch_upload_mb=0.5))
    with live_server(app) as base:
        status, sent = _send_chunked_until_answered(base, route, field, 64 << 20)
        assert b" 413 " in status, status
        assert sent < (16 << 20), sent
        assert httpx.post(f"{base}/v1/score", files={"file": ("a.png", png_bytes(), "image/png")}).status_code == 200


def test_a_closing_engine_admits_nothing_and_says_retry(tiny_onnx):
    app = create_app(Settings(model=str(tiny_onnx), retry_after_s=2))
    with TestClient(app) as c:
        engine = app.state.engine
        c.portal.call(engine.close, 1.0)
        with pytest.raises(QueueFull, match="replaced"):
            with engine.admit():
                pass
        r = c.post("/v1/score", content=png_bytes(), headers={"content-type": "image/png"})
        assert r.status_code == 503 and r.headers["retry-after"] == "2"


class _FakeOnnx:
    def __init__(self, tags_value: float):
        self.tags_value = tags_value

    def run(self, x):
        return np.full(len(x), 0.5, np.float32), np.full((len(x), 3), self.tags_value, np.float32)


class _FakeScorer:
    def __init__(self, tags_value: float):
        from creative_qa.preprocess import PreprocessSpec

        self.spec, self.tags, self.onnx = PreprocessSpec(32, 1, 64), ["a", "b", "c"], _FakeOnnx(tags_value)

    def run_prepared(self, x):
        return self.onnx.run(x)


def test_smoke_inference_refuses_tag_outputs_above_one():
    smoke_test(_FakeScorer(0.7))  # probabilities: fine
    with pytest.raises(ValueError, match="outside"):
        smoke_test(_FakeScorer(3.5))  # logits, not probabilities


MULTIPART_HEAD = (
    b'--cqa\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
)


@pytest.mark.parametrize(("ctype", "head"), [("image/png", b""), ("multipart/form-data; boundary=cqa", MULTIPART_HEAD)])
def test_a_stalled_upload_gets_408_at_the_deadline_and_frees_its_queue_place(tiny_onnx, ctype, head):
    """A client that sends part of its body and stops must not hold its admitted place for ever."""
    import socket
    import time
    from urllib.parse import urlparse

    app = create_app(Settings(model=str(tiny_onnx), max_queue=1, max_body_s=1.0))
    with live_server(app) as url:
        u = urlparse(url)
        with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
            sock.sendall(
                f"POST /v1/score HTTP/1.1\r\nHost: {u.hostname}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: 100000\r\n\r\n".encode()
                + head
                + b"\x89PNG\r\n"  # a few bytes of the creative, then nothing
            )
            time.sleep(0.3)
            # The stalled upload holds the only place: another request is refused meanwhile.
            busy = httpx.post(f"{url}/v1/score", content=png_bytes(3), headers={"content-type": "image/png"})
            t0 = time.perf_counter()
            answer = sock.recv(4096)
            waited = time.perf_counter() - t0
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"CREATIVE_QA_MAX_BODY_S" in answer and waited < 5
        after = httpx.post(f"{url}/v1/score", content=png_bytes(3), headers={"content-type": "image/png"})
    assert busy.status_code == 503
    assert after.status_code == 200, after.text
