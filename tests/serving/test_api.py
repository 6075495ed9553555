import json

import pytest
from fastapi.testclient import TestClient

from creative_qa.scorer import Scorer
from creative_qa.taxonomy import load_taxonomy
from serving.main import create_app
from serving.settings import Settings
from tests.conftest import WEAK_TAGS
from tests.serving.conftest import png_bytes, video_bytes


@pytest.fixture(scope="module")
def client(tiny_onnx):
    app = create_app(Settings(model=str(tiny_onnx), max_upload_mb=0.5, max_duration_s=30, max_batch_files=4))
    with TestClient(app) as c:
        yield c


def test_health_ready_and_model(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"]["version"] == "7"
    info = client.get("/v1/model").json()
    assert info["version"] == "7" and "CPUExecutionProvider" in info["providers"]
    assert [t["name"] for t in info["taxonomy"]["tags"]] == load_taxonomy().tag_names


def test_score_multipart_and_raw_body_agree_with_the_scorer(client, tiny_onnx):
    data = png_bytes()
    r = client.post("/v1/score", files={"file": ("a.png", data, "image/png")})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"quality", "tags", "flags", "model"}
    raw = client.post("/v1/score", content=data, headers={"content-type": "image/png"})
    assert raw.status_code == 200 and raw.json() == body
    assert body == Scorer(tiny_onnx).score_bytes(data)


def test_video_gets_per_frame_scores(client):
    r = client.post("/v1/score", files={"file": ("clip.mp4", video_bytes(3, fps=5), "video/mp4")})
    assert r.status_code == 200, r.text
    frames = r.json()["frames"]
    assert len(frames) == 8
    assert [f["time_s"] for f in frames] == sorted(f["time_s"] for f in frames)


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"files": {"file": ("a.txt", b"hello", "text/plain")}}, 415),
        ({"files": {"file": ("a.png", b"this is not a png", "image/png")}}, 422),
        ({"files": {"file": ("a.png", b"", "image/png")}}, 422),
        ({"files": {"other": ("a.png", b"x", "image/png")}}, 422),
        ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415),
        ({"content": b"\x00" * 10, "headers": {"content-type": "image/png"}}, 422),
        ({"content": b"", "headers": {"content-type": "image/png"}}, 422),
        ({"files": {"file": ("big.png", b"\x89PNG" + b"0" * 600_000, "image/png")}}, 413),
        ({"content": b"0" * 700_000, "headers": {"content-type": "image/jpeg"}}, 413),
    ],
)
def test_bad_uploads_get_a_4xx_with_a_reason(client, kwargs, status):
    r = client.post("/v1/score", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_video_over_the_duration_limit_is_refused_with_413(client):
    r = client.post("/v1/score", files={"file": ("long.mp4", video_bytes(40, fps=2), "video/mp4")})
    assert r.status_code == 413
    assert "30 s limit" in r.json()["detail"]


def test_batch_route_scores_each_file_and_reports_each_error(client):
    good, other = png_bytes(1), png_bytes(2)
    files = [
        ("files", ("a.png", good, "image/png")),
        ("files", ("b.txt", b"hello", "text/plain")),
        ("files", ("c.png", b"garbage", "image/png")),
        ("files", ("d.png", other, "image/png")),
    ]
    r = client.post("/v1/score/batch", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [0, 1, 2, 3]
    assert [x.get("error", {}).get("status") for x in results] == [None, 415, 422, None]
    single = client.post("/v1/score", files={"file": ("a.png", good, "image/png")}).json()
    assert results[0]["result"] == single and results[0]["filename"] == "a.png"
    assert results[3]["result"]["quality"] != results[0]["result"]["quality"]


def test_batch_route_refuses_a_malformed_request(client):
    assert client.post("/v1/score/batch", content=png_bytes(), headers={"content-type": "image/png"}).status_code == 415
    r = client.post("/v1/score/batch", files={"file": ("a.png", png_bytes(), "image/png")})
    assert r.status_code == 422 and "files" in r.json()["detail"]
    too_many = [("files", (f"{i}.png", png_bytes(i), "image/png")) for i in range(5)]
    assert client.post("/v1/score/batch", files=too_many).status_code == 400


def test_full_queue_answers_503_with_retry_after(tiny_onnx):
    app = create_app(Settings(model=str(tiny_onnx), max_queue=2, retry_after_s=3))
    with TestClient(app) as c:
        engine = app.state.engine
        with engine.admit(2):  # two creatives in flight: the queue is full
            r = c.post("/v1/score", content=png_bytes(), headers={"content-type": "image/png"})
        assert r.status_code == 503 and r.headers["retry-after"] == "3"
        assert "CREATIVE_QA_MAX_QUEUE" in r.json()["detail"]
        assert c.post("/v1/score", content=png_bytes(), headers={"content-type": "image/png"}).status_code == 200
        assert "creative_qa_rejected_total 1.0" in c.get("/metrics").text


def test_metrics_count_requests_batches_and_decode_failures(client):
    client.post("/v1/score", content=png_bytes(), headers={"content-type": "image/png"})
    client.post("/v1/score", content=b"\x00" * 10, headers={"content-type": "image/png"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'creative_qa_requests_total{method="POST",route="/v1/score",status="200"}' in text
    assert 'creative_qa_requests_total{method="POST",route="/v1/score",status="422"}' in text
    assert 'creative_qa_decode_failures_total{reason="undecodable"}' in text
    assert 'creative_qa_model_info{name="tiny",taxonomy_version="1",version="7"} 1.0' in text
    assert "creative_qa_batch_size_count" in text and "creative_qa_queue_depth 0.0" in text
    assert 'creative_qa_request_seconds_bucket{le="0.5",route="/v1/score"}' in text


def test_openapi_describes_uploads_and_the_scores_schema(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/score"]["post"]["requestBody"]
    assert body["required"] is True
    form = body["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["file"] == {"type": "string", "format": "binary"} and form["required"] == ["file"]
    # the raw body as generators support it (no image/* wildcards); the server takes image/* and video/* too
    assert set(body["content"]) == {"multipart/form-data", "application/octet-stream"}
    assert "image/*" in body["description"] and "video/*" in body["description"]
    (header,) = spec["paths"]["/v1/score"]["post"]["parameters"]
    assert (header["name"], header["in"], header["required"]) == ("X-Filename", "header", False)
    ok = spec["paths"]["/v1/score"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Scores"}
    assert {"quality", "tags", "flags", "model", "frames"} == set(spec["components"]["schemas"]["Scores"]["properties"])
    batch = spec["paths"]["/v1/score/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert batch["properties"]["files"]["type"] == "array"
    assert batch["properties"]["files"]["maxItems"] == 4  # this app's max_batch_files
    assert spec["paths"]["/v1/admin/reload"]["post"]["security"] == [{"bearer": []}]


def test_the_specs_batch_limit_is_the_servers(client, tiny_onnx):
    """A request the spec allows (maxItems files) is scored; one over it is refused."""
    spec = client.get("/openapi.json").json()
    files = spec["paths"]["/v1/score/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    most = files["properties"]["files"]["maxItems"]
    upload = [("files", (f"{i}.png", png_bytes(i), "image/png")) for i in range(most + 1)]
    ok = client.post("/v1/score/batch", files=upload[:most])
    assert ok.status_code == 200 and len(ok.json()["results"]) == most
    assert client.post("/v1/score/batch", files=upload).status_code == 400
    # each app declares its own limit (the routes' spec fragments are shared module constants)
    other = create_app(Settings(model=str(tiny_onnx), max_batch_files=2)).openapi()
    other_files = other["paths"]["/v1/score/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert other_files["schema"]["properties"]["files"]["maxItems"] == 2
    assert client.get("/openapi.json").json() == spec


def test_raw_bodies_of_any_image_or_video_type_are_accepted(client):
    for ctype in ("image/png", "image/x-anything", "application/octet-stream", ""):
        r = client.post("/v1/score", content=png_bytes(3), headers={"content-type": ctype})
        assert r.status_code == 200, (ctype, r.text)
    clip = video_bytes(1, fps=5)
    r = client.post("/v1/score", content=clip, headers={"content-type": "video/mp4", "x-filename": "clip.mp4"})
    assert r.status_code == 200 and r.json()["frames"]


def test_metrics_label_the_docs_routes_by_their_own_path(client):
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/no/such/page"):
        client.get(path)
    text = client.get("/metrics").text
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert f'creative_qa_requests_total{{method="GET",route="{path}",status="200"}}' in text, path
    assert 'creative_qa_requests_total{method="GET",route="unmatched",status="404"}' in text


def test_page_is_served(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="file"' in r.text and "/v1/score" in r.text


def test_missing_model_keeps_the_process_up_and_says_how_to_fix_it(tmp_path):
    app = create_app(Settings(model=str(tmp_path / "missing.onnx")))
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        detail = r.json()["detail"]
        assert r.status_code == 503 and "missing.onnx" in detail
        assert "creative-qa demo" in detail and "creative-qa export" in detail
        scored = c.post("/v1/score", content=png_bytes(), headers={"content-type": "image/png"})
        assert scored.status_code == 503 and "creative-qa demo" in scored.json()["detail"]


def test_unregistered_model_names_the_registry_and_the_fix():
    app = create_app(Settings(model="models:/creative-qa@champion"))
    with TestClient(app) as c:
        r = c.get("/readyz")
        detail = r.json()["detail"]
        assert r.status_code == 503
        assert "models:/creative-qa@champion" in detail and "creative-qa demo" in detail
        assert "Traceback" not in json.dumps(r.json())


def test_model_route_names_unreliable_tags_and_score_never_flags_them(tiny_onnx_weak):
    with TestClient(create_app(Settings(model=str(tiny_onnx_weak)))) as c:
        info = c.get("/v1/model").json()
        assert set(info["unreliable"]) == set(WEAK_TAGS)
        assert info["flag_policy"]["tags"]["watermark"]["reliable"] is False
        body = c.post("/v1/score", content=png_bytes(), headers={"content-type": "image/png"}).json()
    assert body["flags"] == [t for t in info["thresholds"] if t not in WEAK_TAGS]  # thresholds 1e-4: the rest flag
