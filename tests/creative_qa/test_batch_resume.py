"""A batch run killed part-way (SIGKILL) and rerun scores every creative exactly once, with unchanged scores."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from creative_qa.batch import batch_score
from creative_qa.scorer import Scorer

ROOT = Path(__file__).resolve().parents[2]


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "creative_qa.cli", "batch-score", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture()
def creatives(tiny_data, tmp_path) -> Path:
    """Three copies of the tiny data set's creatives (images and videos) and one corrupt file."""
    folder = tmp_path / "creatives"
    for copy in range(3):
        for split in ("train", "unlabeled", "test"):
            shutil.copytree(tiny_data["test"].parent / split, folder / f"c{copy}" / split)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


def test_sigkill_then_rerun_scores_each_creative_once(tiny_onnx, creatives, tmp_path):
    total = sum(1 for p in creatives.rglob("*") if p.is_file())
    assert total > 150

    reference = tmp_path / "ref" / "scores.parquet"
    batch_score(creatives, reference, tiny_onnx, workers=0, report=False, progress=False)

    out = tmp_path / "run" / "scores.parquet"
    parts = out.with_name(out.name + ".parts")
    cmd = _cli(
        ["--input", str(creatives), "--output", str(out), "--model", str(tiny_onnx)]
        + ["--workers", "1", "--batch-size", "4", "--part-size", "6", "--no-report"]
    )
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 3 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # it died before combining
    rows_before = sum(pq.read_metadata(p).num_rows for p in parts.glob("part-*.parquet"))
    assert 0 < rows_before < total  # part-way: some parts written, not all

    rerun = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{rows_before} already done" in rerun.stdout

    got = pd.read_parquet(out)
    ref = pd.read_parquet(reference)
    assert len(got) == total and got["path"].is_unique
    assert set(got["path"]) == set(ref["path"])
    got, ref = got.set_index("path").sort_index(), ref.set_index("path").sort_index()
    scores = ["quality", *Scorer(tiny_onnx).tags]
    pd.testing.assert_frame_equal(got[scores], ref[scores], atol=2e-6, rtol=0)
    assert (got["flags"] == ref["flags"]).all() and (got["error"].isna() == ref["error"].isna()).all()
    assert got.loc["broken.jpg", "error"] and got["error"].notna().sum() == 1


def test_a_creative_that_kills_its_worker_gets_an_error_row_and_the_rest_are_scored(tiny_onnx, tiny_data, tmp_path):
    from tqdm import tqdm

    from creative_qa.batch import PartStore, RowBuffer, WorkerPool, list_inputs, run_local
    from tests.creative_qa.crashing_task import prepare_chunk_or_die

    folder = tmp_path / "in"
    shutil.copytree(tiny_data["test"].parent / "test", folder)
    pngs = sorted(folder.glob("*.png"))
    shutil.copyfile(pngs[3], folder / "crash.png")
    inputs = list_inputs(folder)
    scorer = Scorer(tiny_onnx)
    store = PartStore(tmp_path / "o.parquet", scorer.tags, {"model_name": "tiny"})
    buf = RowBuffer(store, 1000, tqdm(disable=True))
    pool = WorkerPool(2, task=prepare_chunk_or_die)
    try:
        chunks = (inputs.iloc[i : i + 3].to_dict("records") for i in range(0, len(inputs), 3))
        run_local(scorer, chunks, buf, pool, batch_size=4)
    finally:
        pool.shutdown()
    buf.flush()
    store.combine()
    store.close()
    back = pd.read_parquet(tmp_path / "o.parquet")
    assert len(back) == len(inputs) and back["path"].is_unique
    errors = back.set_index("path")["error"].dropna()
    assert list(errors.index) == ["crash.png"] and "crashed" in errors.iloc[0]
    assert back["quality"].notna().sum() == len(inputs) - 1
