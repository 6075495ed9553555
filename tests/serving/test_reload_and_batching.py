import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnxruntime
import pytest
from fastapi.testclient import TestClient

from creative_qa.scorer import Scorer
from serving.batcher import Batcher, pad_to_bucket, run_in_buckets
from serving.engine import GPU_PROVIDERS, Engine, batching_on, on_gpu
from serving.main import create_app
from serving.metrics import Metrics
from serving.settings import Settings
from tests.serving.conftest import live_server, png_bytes

TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def test_reload_is_disabled_without_a_token_and_refused_without_the_right_one(tiny_onnx, tiny_onnx_v8):
    with TestClient(create_app(Settings(model=str(tiny_onnx)))) as c:
        r = c.post("/v1/admin/reload", headers=AUTH)
        assert r.status_code == 404 and "CREATIVE_QA_ADMIN_TOKEN" in r.json()["detail"]
    with TestClient(create_app(Settings(model=str(tiny_onnx), admin_token=TOKEN))) as c:
        body = {"model": str(tiny_onnx_v8)}
        assert c.post("/v1/admin/reload", json=body).status_code == 401
        wrong = c.post("/v1/admin/reload", json=body, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/model").json()["version"] == "7"


def test_a_bad_model_file_leaves_the_old_model_serving(tiny_onnx, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx graph")
    with TestClient(create_app(Settings(model=str(tiny_onnx), admin_token=TOKEN))) as c:
        r = c.post("/v1/admin/reload", json={"model": str(bad)}, headers=AUTH)
        assert r.status_code == 422 and "still serving tiny 7" in r.json()["detail"]
        missing = c.post("/v1/admin/reload", json={"model": str(tmp_path / "none.onnx")}, headers=AUTH)
        assert missing.status_code == 422
        assert c.get("/v1/model").json()["version"] == "7"
        scored = c.post("/v1/score", content=png_bytes(), headers={"content-type": "image/png"})
        assert scored.status_code == 200 and scored.json()["model"]["version"] == "7"
        assert 'creative_qa_reloads_total{outcome="failed"} 2.0' in c.get("/metrics").text


def test_a_reload_from_a_scheme_not_allowed_is_refused_before_anything_is_fetched(tiny_onnx, monkeypatch):
    import serving.routes.admin as admin

    fetched = []
    monkeypatch.setattr(admin, "load_scorer", lambda settings, model: fetched.append(model))
    with TestClient(create_app(Settings(model=str(tiny_onnx), admin_token=TOKEN))) as c:
        for uri in ("http://169.254.169.254/latest/model.onnx", "s3://bucket/model.onnx", "file:///etc/passwd"):
            r = c.post("/v1/admin/reload", json={"model": uri}, headers=AUTH)
            assert r.status_code == 422 and "CREATIVE_QA_RELOAD_SCHEMES" in r.json()["detail"], r.text
        assert fetched == [] and c.get("/v1/model").json()["version"] == "7"
    with TestClient(
        create_app(Settings(model=str(tiny_onnx), admin_token=TOKEN, reload_schemes="models,runs,s3"))
    ) as c:
        c.post("/v1/admin/reload", json={"model": "s3://bucket/model.onnx"}, headers=AUTH)
        assert fetched == ["s3://bucket/model.onnx"]  # allowed: handed to the loader


def test_a_good_model_is_swapped_in_while_requests_are_in_flight(tiny_onnx, tiny_onnx_v8):
    app = create_app(Settings(model=str(tiny_onnx), admin_token=TOKEN))
    data = png_bytes(5)
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as h:
            for _ in range(400):  # bounded
                if stop.is_set():
                    return
                r = h.post("/v1/score", content=data, headers={"content-type": "image/png"})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.append(r.json()["model"]["version"])

    with live_server(app) as url, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(hammer, url) for _ in range(6)]
        while len(versions) < 12:
            assert not all(f.done() for f in futures)
            threading.Event().wait(0.02)
        r = httpx.post(f"{url}/v1/admin/reload", json={"model": str(tiny_onnx_v8)}, headers=AUTH, timeout=60)
        n_at_swap = len(versions)
        while len(versions) < n_at_swap + 12:
            threading.Event().wait(0.02)
        stop.set()
        for f in futures:
            f.result()
        after = httpx.get(f"{url}/v1/model").json()["version"]
    assert r.status_code == 200, r.text
    assert r.json()["model"]["version"] == "8" and r.json()["previous"]["version"] == "7"
    assert set(statuses) == {200}
    assert versions[:12] == ["7"] * 12 and versions[-6:] == ["8"] * 6
    assert after == "8"


def test_bucket_padding_only_shows_the_model_bucket_sizes():
    seen: list[int] = []

    def run(x):
        seen.append(len(x))
        return x[:, 0, 0, 0, 0].astype(np.float32), np.zeros((len(x), 2), np.float32)

    x = np.arange(21, dtype=np.uint8).reshape(21, 1, 1, 1, 1).repeat(3, axis=-1)
    q, t = run_in_buckets(run, x, [1, 2, 4, 8])
    assert seen == [8, 8, 8] and q.tolist() == list(range(21)) and t.shape == (21, 2)
    assert pad_to_bucket(x[:3], [1, 2, 4, 8]).shape[0] == 4 and pad_to_bucket(x[:3], [2]).shape[0] == 3


def test_concurrent_submissions_share_one_model_run():
    sizes: list[int] = []

    def run(x):
        sizes.append(len(x))
        return x[:, 0, 0, 0, 0].astype(np.float32), np.zeros((len(x), 1), np.float32)

    async def main():
        b = Batcher(run, max_batch=32, max_wait_s=0.05)
        b.start()
        xs = [np.full((n, 1, 1, 1, 3), i, np.uint8) for i, n in enumerate([1, 3, 1, 2, 1])]
        outs = await asyncio.gather(*(b.submit(x) for x in xs))
        await b.close()
        return xs, outs

    xs, outs = asyncio.run(main())
    assert sizes == [8]  # one run for all five requests' eight frames
    for i, (x, (q, _)) in enumerate(zip(xs, outs, strict=True)):
        assert q.tolist() == [float(i)] * len(x)


@pytest.mark.parametrize("batching", [True, False])
def test_live_load_gets_only_200_or_503_with_retry_after(tiny_onnx, batching):
    app = create_app(Settings(model=str(tiny_onnx), max_queue=3, batching=batching))
    data = png_bytes(3, size=(300, 400))

    async def load(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as h:
            return await asyncio.gather(
                *(h.post("/v1/score", content=data, headers={"content-type": "image/png"}) for _ in range(24))
            )

    with live_server(app) as url:
        responses = asyncio.run(load(url))
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 503}, codes
    assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 503)


def test_gpu_style_bucket_padding_shows_the_model_only_bucket_sizes(tiny_onnx):
    from creative_qa.scorer import Scorer

    scorer = Scorer(tiny_onnx)
    seen: list[int] = []
    run = scorer.onnx.run
    scorer.onnx.run = lambda x: (seen.append(len(x)), run(x))[1]  # type: ignore[method-assign]
    app = create_app(Settings(model=str(tiny_onnx), pad_to_buckets=True, batch_buckets="4,16"), scorer=scorer)
    with TestClient(app) as c:
        one = c.post("/v1/score", content=png_bytes(1), headers={"content-type": "image/png"})
        assert one.status_code == 200
        assert one.json() == Scorer(tiny_onnx).score_bytes(png_bytes(1))  # padding rows do not leak into results
    assert seen == [4]


def test_batching_is_on_by_default_only_where_a_gpu_serves(tiny_onnx):
    auto = Settings(model=str(tiny_onnx))
    assert auto.batching is None
    assert not batching_on(auto, ["CPUExecutionProvider"])
    assert batching_on(auto, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert batching_on(Settings(model=str(tiny_onnx), batching=True), ["CPUExecutionProvider"])
    assert not batching_on(Settings(model=str(tiny_onnx), batching=False), ["CUDAExecutionProvider"])
    # auto: a batcher exactly where the session runs on a GPU provider this onnxruntime offers (onnxruntime-gpu
    # offers CUDA on a machine without a GPU too, and its session then runs on the CPU)
    gpu_offered = bool(GPU_PROVIDERS & set(onnxruntime.get_available_providers()))
    scorer = Scorer(tiny_onnx)
    gpu_serving = on_gpu(scorer.onnx.providers)
    assert gpu_serving <= gpu_offered
    assert (Engine(scorer, auto, Metrics()).batcher is not None) is gpu_serving
    assert Engine(Scorer(tiny_onnx), Settings(model=str(tiny_onnx), batching=True), Metrics()).batcher is not None


def test_a_failing_batch_answers_its_requests_and_the_batcher_goes_on():
    calls = {"n": 0}

    def on_batch(_n: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("no room for this batch")

    def run(x):
        return x[:, 0, 0, 0, 0].astype(np.float32), np.zeros((len(x), 1), np.float32)

    class Fatal(BaseException):
        pass

    async def main():
        b = Batcher(run, max_batch=4, max_wait_s=0.0, on_batch=on_batch)
        b.start()
        with pytest.raises(MemoryError):
            await asyncio.wait_for(b.submit(np.full((1, 1, 1, 1, 3), 7, np.uint8)), 5)
        q, _ = await asyncio.wait_for(b.submit(np.full((1, 1, 1, 1, 3), 9, np.uint8)), 5)
        assert q.tolist() == [9.0]
        # a dying model thread answers what it held, and nothing queues behind it afterwards
        b.run = lambda x: (_ for _ in ()).throw(Fatal())
        with pytest.raises(RuntimeError, match="batcher stopped"):
            await asyncio.wait_for(b.submit(np.zeros((1, 1, 1, 1, 3), np.uint8)), 5)
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError, match="not running"):
            await asyncio.wait_for(b.submit(np.zeros((1, 1, 1, 1, 3), np.uint8)), 5)
        await b.close()

    asyncio.run(main())
