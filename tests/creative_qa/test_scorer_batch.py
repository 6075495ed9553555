import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from creative_qa.batch import batch_score, list_inputs
from creative_qa.scorer import Scorer, choose_providers
from creative_qa.taxonomy import load_taxonomy


def test_scorer_reads_everything_from_the_onnx_file(tiny_onnx, tiny_data):
    scorer = Scorer(tiny_onnx)
    assert scorer.version == "7" and scorer.name == "tiny"
    assert scorer.spec.input_size == 64 and scorer.tags == load_taxonomy().tag_names
    path = pd.read_csv(tiny_data["test"])["path"].iloc[0]
    s = scorer.score_file(tiny_data["test"].parent / path)
    assert 0 <= s["quality"] <= 1
    assert set(s["tags"]) == set(scorer.tags)
    assert s["flags"] == [t for t in scorer.tags if s["tags"][t] >= scorer.thresholds[t]]
    assert s["model"] == {"name": "tiny", "version": "7", "taxonomy_version": "1"}


def test_video_scores_have_frames_and_aggregate(tiny_onnx, tiny_data):
    scorer = Scorer(tiny_onnx, max_frames=4)
    video = sorted(tiny_data["train_labeled"].parent.rglob("*.mp4"))[0]
    s = scorer.score_file(video)
    assert 2 <= len(s["frames"]) <= 4
    for t in scorer.tags:
        assert s["tags"][t] == pytest.approx(max(f["tags"][t] for f in s["frames"]), abs=1e-6)
    assert s["quality"] == pytest.approx(np.mean([f["quality"] for f in s["frames"]]), abs=1e-5)


def test_cpu_provider_is_always_there():
    assert "CPUExecutionProvider" in choose_providers()
    with pytest.raises(ValueError, match="not available"):
        choose_providers(["NoSuchExecutionProvider"])


def test_batch_score_reports_and_skips_corrupt_files(tiny_onnx, tiny_data, tmp_path):
    df = pd.read_csv(tiny_data["test"])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG broken")
    manifest = tmp_path / "m.csv"
    rows = [str(tiny_data["test"].parent / p) for p in df["path"].iloc[:5]]
    pd.DataFrame({"path": rows + [str(corrupt), "/no/such/file.png"]}).to_csv(manifest, index=False)
    out = tmp_path / "scores.parquet"
    summary = batch_score(manifest, out, tiny_onnx, batch_size=3, workers=2, report=False, progress=False)
    back = pd.read_parquet(out)
    assert (summary.scored, summary.errors, summary.rows) == (5, 2, 7)
    assert list(back["path"]) == rows + [str(corrupt), "/no/such/file.png"]  # input order in one run
    assert back["error"].isna().sum() == 5
    assert "not a decodable image" in back["error"].iloc[5] and "cannot read" in back["error"].iloc[6]
    assert back["quality"].iloc[:5].between(0, 1).all() and np.isnan(back["quality"].iloc[5])
    # batching and worker processes do not change the scores
    scorer = Scorer(tiny_onnx)
    for i in (0, 4):
        single = scorer.score_file(rows[i])
        assert back["quality"].iloc[i] == pytest.approx(single["quality"], abs=1e-5)
        assert back["flags"].iloc[i] == ",".join(single["flags"])


def test_videos_are_aggregated_like_the_scorer(tiny_onnx, tiny_data, tmp_path):
    videos = sorted(tiny_data["train_labeled"].parent.rglob("*.mp4"))[:2]
    listing = tmp_path / "paths.txt"
    listing.write_text("# two videos, the first listed twice\n" + "\n".join(map(str, [*videos, videos[0]])) + "\n\n")
    out = tmp_path / "v.parquet"
    summary = batch_score(listing, out, tiny_onnx, workers=1, report=False, progress=False)
    assert (summary.inputs, summary.rows) == (2, 2)
    back = pd.read_parquet(out)
    scorer = Scorer(tiny_onnx)
    for v, row in zip(videos, back.itertuples(), strict=True):
        s = scorer.score_file(v)
        assert row.n_frames == len(s["frames"]) > 1
        assert row.quality == pytest.approx(s["quality"], abs=1e-5)
        assert [getattr(row, t) for t in scorer.tags] == pytest.approx([s["tags"][t] for t in scorer.tags], abs=1e-5)


def test_folder_manifest_and_path_list_give_the_same_keys(tiny_data, tmp_path):
    folder = tiny_data["test"].parent / "test"
    files = sorted(str(p) for p in folder.rglob("*") if p.suffix in (".png", ".mp4", ".jpg", ".gif", ".webp"))
    (tmp_path / "l.txt").write_text("\n".join(files + files[:2]))  # duplicates are dropped
    pd.DataFrame({"path": files}).to_parquet(tmp_path / "m.parquet")
    by_folder = list_inputs(folder)
    by_txt = list_inputs(tmp_path / "l.txt")
    by_parquet = list_inputs(tmp_path / "m.parquet")
    assert len(by_folder) == len(files) > 0
    assert set(by_folder["key"]) == set(by_txt["key"]) == set(by_parquet["key"])
    (tmp_path / "nopath.csv").write_text("file,x\na.png,1\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        batch_score(tmp_path / "nopath.csv", tmp_path / "o.parquet", "unused.onnx", workers=0)
    hashed = list_inputs(folder, content_hash=True)
    assert hashed["key"].is_unique and not set(hashed["key"]) & set(by_folder["key"])


def test_rerun_scores_only_what_changed_and_keeps_one_row_each(tiny_onnx, tiny_data, tmp_path):
    src = tiny_data["test"].parent / "test"
    folder = tmp_path / "in"
    shutil.copytree(src, folder)
    out = tmp_path / "s.csv"
    first = batch_score(folder, out, tiny_onnx, workers=0, report=False, progress=False, part_size=5)
    n = first.rows
    assert first.scored + first.errors == n and len(pd.read_csv(out)) == n
    again = batch_score(folder, out, tiny_onnx, workers=0, report=False, progress=False)
    assert (again.already_done, again.scored + again.errors, again.rows) == (n, 0, n)
    # a creative replaced by a different one is scored again, and the output keeps only its new row
    victim = sorted(folder.glob("*.png"))[0]
    other = sorted(folder.glob("*.png"))[1]
    shutil.copyfile(other, victim)
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 5_000_000_000))
    third = batch_score(folder, out, tiny_onnx, workers=0, report=False, progress=False)
    assert (third.already_done, third.scored) == (n - 1, 1)
    back = pd.read_csv(out)
    assert len(back) == n and back["path"].is_unique
    rel = lambda p: str(p.relative_to(folder))  # noqa: E731
    assert back.set_index("path").loc[rel(victim), "quality"] == pytest.approx(
        back.set_index("path").loc[rel(other), "quality"], abs=1e-6
    )
    # another model's parts are refused; --overwrite starts fresh
    run_file = out.with_name(out.name + ".parts") / "_run.json"
    meta = json.loads(run_file.read_text())
    run_file.write_text(json.dumps({**meta, "model_version": "6"}))
    with pytest.raises(ValueError, match="--overwrite"):
        batch_score(folder, out, tiny_onnx, workers=0, report=False, progress=False)
    fresh = batch_score(folder, out, tiny_onnx, workers=0, report=False, progress=False, overwrite=True)
    assert (fresh.already_done, fresh.scored + fresh.errors, fresh.rows) == (0, n, n)


@pytest.mark.parametrize("module", ["creative_qa.batch.ray_engine", "creative_qa.report", "creative_qa.batch.worker"])
def test_batch_modules_import_without_torch_or_ray(module):
    code = (
        f"import sys, {module}; bad = [m for m in ('torch', 'timm', 'training', 'ray') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{module} pulled in {r.stdout.strip()} {r.stderr[-500:]}"


def test_one_writer_per_output(tmp_path):
    from creative_qa.batch import PartStore

    first = PartStore(tmp_path / "o.parquet", ["a"], {"model_name": "m"})
    first.write([{"path": "x.png", "quality": 0.5, "a": 0.1, "key": "x|1|1"}])
    with pytest.raises(RuntimeError, match="another batch-score run"):
        PartStore(tmp_path / "o.parquet", ["a"], {"model_name": "m"}, overwrite=True)
    assert len(first.parts()) == 1  # the refused --overwrite deleted nothing
    first.close()
    again = PartStore(tmp_path / "o.parquet", ["a"], {"model_name": "m"}, overwrite=True)
    assert again.parts() == [] and len(again.done_ids()) == 0
    again.close()
