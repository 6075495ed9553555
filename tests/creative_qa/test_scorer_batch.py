import numpy as np
import pandas as pd
import pytest

from creative_qa.batch import batch_score
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
    (tiny_data["test"].parent / "corrupt.png").write_bytes(b"\x89PNG broken")
    manifest = tmp_path / "m.csv"
    rows = [str(tiny_data["test"].parent / p) for p in df["path"].iloc[:5]]
    pd.DataFrame({"path": rows + [str(tiny_data["test"].parent / "corrupt.png"), "/no/such/file.png"]}).to_csv(
        manifest, index=False
    )
    out = tmp_path / "scores.parquet"
    table = batch_score(manifest, out, tiny_onnx, batch_size=3, progress=False)
    back = pd.read_parquet(out)
    assert len(back) == 7 and list(back["path"]) == list(table["path"])
    assert back["error"].isna().sum() == 5
    assert back["error"].iloc[5] and back["error"].iloc[6]
    assert back["quality"].iloc[:5].between(0, 1).all() and np.isnan(back["quality"].iloc[5])
    # batching does not change the scores
    single = Scorer(tiny_onnx).score_file(rows[0])
    assert back["quality"].iloc[0] == pytest.approx(single["quality"], abs=1e-5)
