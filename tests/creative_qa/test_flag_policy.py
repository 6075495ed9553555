"""A flag is a claim: tags the model's flag policy marks unreliable are scored but never flagged, and every
surface (Scorer, ``creative-qa score``, the batch report) says which and why."""

import json
import re
import subprocess
import sys

import pandas as pd

from creative_qa.batch import batch_score
from creative_qa.scorer import Scorer
from tests.conftest import WEAK_TAGS


def test_scorer_never_flags_an_unreliable_tag(tiny_onnx_weak, tiny_data):
    scorer = Scorer(tiny_onnx_weak)
    assert set(scorer.unreliable) == set(WEAK_TAGS)
    assert all("prior" in why for why in scorer.unreliable.values())
    path = tiny_data["test"].parent / pd.read_csv(tiny_data["test"])["path"][0]
    s = scorer.score_file(path)
    # every threshold is 1e-4: a reliable tag is always flagged, an unreliable one never, its probability kept
    assert s["flags"] == [t for t in scorer.tags if t not in WEAK_TAGS]
    assert set(WEAK_TAGS) <= set(s["tags"])
    d = scorer.describe()
    assert set(d["unreliable"]) == set(WEAK_TAGS) and d["flag_policy"]["target_precision"] == 0.8
    assert "creative_qa.flags" not in d["metadata"]  # given once, as flag_policy


def test_a_model_without_a_policy_flags_every_tag_at_its_threshold(tiny_onnx):
    scorer = Scorer(tiny_onnx)
    assert scorer.unreliable == {}
    probs = {t: scorer.thresholds[t] for t in scorer.tags}
    assert scorer.flag_policy.flags(probs) == scorer.tags


def test_score_command_names_the_unreliable_tags_on_stderr(tiny_onnx_weak, tiny_data):
    path = tiny_data["test"].parent / pd.read_csv(tiny_data["test"])["path"][0]
    r = subprocess.run(
        [sys.executable, "-m", "creative_qa.cli", "score", str(path), "--model", str(tiny_onnx_weak)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = json.loads(r.stdout)
    assert not set(out["flags"]) & set(WEAK_TAGS)
    assert f"{len(WEAK_TAGS)} tags are unreliable" in r.stderr
    for tag in WEAK_TAGS:
        assert re.search(rf"^  {tag}: does not rank above its prior$", r.stderr, re.M)


def test_batch_report_marks_unreliable_tags_and_shows_the_estimated_true_share(tiny_onnx_weak, tiny_data, tmp_path):
    out = tmp_path / "scores.parquet"
    batch_score(tiny_data["test"], out, tiny_onnx_weak, workers=1, progress=False)
    back = pd.read_parquet(out)
    assert not any(set(str(f).split(",")) & set(WEAK_TAGS) for f in back["flags"])
    page = (tmp_path / "scores.report.html").read_text()
    for tag in WEAK_TAGS:
        assert re.search(rf"<td>{tag}</td><td>[a-z]+</td><td>[0-9.]+</td><td>never</td><td>10.0%</td><td>0</td>", page)
        assert "unreliable: does not rank above its prior" in page
    assert "precision of 0.80 on validation" in page and "3 unreliable tags are never flagged" in page
