"""The Ray Data engine on a local in-process Ray gives the local engine's table."""

import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from creative_qa.batch import batch_score
from creative_qa.batch import ray_engine as batch_ray

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it


def test_ray_engine_matches_local(tiny_onnx, tiny_data, tmp_path, monkeypatch, request):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # the actors (new processes) write their model copy to TMPDIR; a short path: Ray puts its sockets there too
    actor_tmp = Path(tempfile.mkdtemp(prefix="cqa-ray-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(actor_tmp, ignore_errors=True))
    monkeypatch.setenv("TMPDIR", str(actor_tmp))
    df = pd.read_csv(tiny_data["test"])
    files = [str(tiny_data["test"].parent / p) for p in df["path"].iloc[:6]]
    videos = sorted(str(p) for p in (tiny_data["train_labeled"].parent / "train").rglob("*.mp4"))[:1]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG nope")
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": files + videos + [str(tmp_path / "broken.png")]}).to_csv(manifest, index=False)

    local = batch_score(manifest, tmp_path / "local.parquet", tiny_onnx, workers=1, report=False, progress=False)
    assert len(videos) == 1
    a = pd.read_parquet(tmp_path / "local.parquet").sort_values("path").reset_index(drop=True)
    # decoding inside the actors (a CPU cluster), then in separate Ray tasks (what a GPU cluster does)
    for split in (False, True):
        monkeypatch.setattr(batch_ray, "SPLIT_DECODE", split)
        out = tmp_path / f"ray-{split}.parquet"
        ray = batch_score(manifest, out, tiny_onnx, engine="ray", workers=2, progress=False)
        assert (ray.scored, ray.errors, ray.rows) == (local.scored, local.errors, local.rows) == (7, 1, 8)
        assert ray.extra["ray_actors"] == 2 and ray.extra["ray_address"] == "local"
        assert ray.extra["ray_decode_tasks"] is split
        b = pd.read_parquet(out).sort_values("path").reset_index(drop=True)
        assert list(a.columns) == list(b.columns)
        pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-6, rtol=0)
        assert out.with_name(f"ray-{split}.report.html").is_file()
    assert not list(actor_tmp.rglob("creative-qa-actor-*"))  # the actors' model copies are gone
