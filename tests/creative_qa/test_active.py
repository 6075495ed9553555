"""What to label next (creative_qa.active) and the Label Studio files (creative_qa.labelstudio), without a server."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from creative_qa.active import dhash, entropy, hamming, recheck, select, tag_weights
from creative_qa.labelstudio import label_config, read_export, tasks
from creative_qa.taxonomy import load_taxonomy


def test_weights_favour_rare_unreliable_and_named_tags():
    labels = np.array([[1, 1, 0], [1, 0, 0], [1, np.nan, 0], [0, 0, 1]], dtype=float)  # priors 3/4, 1/3, 1/4
    w = tag_weights(labels, ["a", "b", "c"])
    assert w.sum() == pytest.approx(1.0) and w[0] < w[1] < w[2]
    assert tag_weights(labels, ["a", "b", "c"], unreliable={"a"})[0] == pytest.approx(2 * w[0] / (1 + w[0]))
    focus = tag_weights(labels, ["a", "b", "c"], focus={"a"})
    assert focus[0] / focus[1] == pytest.approx(3 * w[0] / w[1])
    assert entropy(np.array([0.5, 0.0, 1.0]))[0] == pytest.approx(1.0) and entropy(np.array([0.0, 1.0])).max() < 1e-4


def test_the_batch_is_uncertain_and_diverse_not_one_design_many_times():
    rng = np.random.default_rng(0)
    # twenty near-copies of one uncertain design, ten of another a little less uncertain, many confident ones
    copies = np.clip(0.5 + rng.normal(0, 0.01, (20, 3)), 0, 1)
    other = np.clip(np.array([0.3, 0.7, 0.35]) + rng.normal(0, 0.01, (10, 3)), 0, 1)
    sure = np.clip(np.array([0.02, 0.97, 0.03]) + rng.normal(0, 0.005, (30, 3)), 0, 1)
    probs = np.vstack([copies, other, sure])
    quality = np.full(len(probs), 0.5)
    w = np.ones(3) / 3
    order, unc, _, _, _ = select(probs, quality, w, 2)
    assert order[0] < 20 and 20 <= order[1] < 30  # the second pick is the other design, not another copy
    top2 = np.argsort(-unc)[:2]
    assert (top2 < 20).all()  # plain uncertainty ranking would have taken two copies
    # a labeled creative like the first design pushes the batch to the second one first
    labeled = (copies[:1], quality[:1])
    assert 20 <= select(probs, quality, w, 1, labeled)[0][0] < 30


def test_near_duplicates_need_the_same_picture_and_the_same_view_of_the_model():
    rng = np.random.default_rng(1)
    base = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(np.kron(base[:8, :8], np.ones((8, 8, 1), dtype=np.uint8)))
    small = img.resize((48, 48))  # a re-export: same hash or nearly
    other = Image.fromarray(255 - np.asarray(img))
    h = np.array([dhash(img), dhash(small), dhash(other)], dtype=np.uint64)
    assert hamming(h, int(h[0]))[1] <= 6 < hamming(h, int(h[0]))[2]
    probs = np.array([[0.5, 0.5], [0.5, 0.49], [0.5, 0.5], [0.1, 0.9]])
    quality = np.full(4, 0.5)
    hashes = np.array([h[0], h[1], h[2], h[1]], dtype=np.uint64)  # 1 copies 0; 3 has 0's picture, another view
    order, _, _, _, skipped = select(probs, quality, np.ones(2) / 2, 4, pool_hashes=hashes)
    assert 1 not in order and skipped["near-duplicate of a chosen one"] == 1 and {0, 2, 3} == set(order)


def test_recheck_lists_the_labels_the_model_contradicts_most():
    labels = np.array([[1, 0], [0, np.nan], [1, 1]])
    probs = np.array([[0.05, 0.97], [0.5, 0.99], [0.9, 0.92]])
    df = recheck(labels, probs, ["a", "b"], ["x", "y", "z"])
    # most contradicted first; y's b is unknown and z agrees with the model: neither is listed
    assert list(zip(df["path"], df["tag"], strict=True)) == [("x", "b"), ("x", "a")]
    assert df["disagreement"].tolist() == [0.97, 0.95] and df["given"].tolist() == [0, 1]


def test_label_studio_config_and_tasks(tmp_path):
    tax = load_taxonomy()
    root = ET.fromstring(label_config(tax))
    choices = [c.get("name") for c in root.iter("Choices")]
    assert choices == tax.tag_names and all(c.get("toName") == "image" for c in root.iter("Choices"))
    assert root.find("Number").get("name") == "quality"
    (tmp_path / "a.png").write_bytes(b"")
    row = {"abspath": str(tmp_path / "a.png"), "quality": 0.3, "why": "uncertain: blurry 0.50"}
    row |= {t: 0.5 for t in tax.tag_names} | {"blurry": 0.95, "noisy": 0.02}
    (task,) = tasks(pd.DataFrame([row]), tax, tmp_path)
    assert task["data"]["image"] == "/data/local-files/?d=a.png" and "chosen because uncertain" in task["data"]["model"]
    pre = {r["from_name"]: r["value"]["choices"][0] for r in task["predictions"][0]["result"]}
    assert pre == {"blurry": "yes", "noisy": "no"}  # only what the model is sure of is pre-answered
    with pytest.raises(ValueError, match="document root"):
        tasks(pd.DataFrame([row]), tax, tmp_path / "elsewhere")


def test_an_export_becomes_labels_blank_where_unanswered(tmp_path):
    tax = load_taxonomy()
    ans = lambda tag, c: {"from_name": tag, "to_name": "image", "type": "choices", "value": {"choices": [c]}}  # noqa: E731
    export = [
        {"id": 1, "data": {"path": str(tmp_path / "a.png")}, "annotations": [
            {"completed_by": 1, "result": [ans("blurry", "yes"), ans("noisy", "no")]},
            {"completed_by": {"id": 2, "email": "b@x"}, "result": [ans("blurry", "yes"), ans("noisy", "yes")]},
            {"completed_by": 3, "result": [ans("blurry", "no")]},
        ]},
        {"id": 2, "data": {"path": str(tmp_path / "b.png")},
         "annotations": [{"completed_by": 1, "was_cancelled": True}]},
    ]  # fmt: skip
    f = tmp_path / "export.json"
    f.write_text(json.dumps(export))
    df = read_export(f, tax, tmp_path)
    assert len(df) == 1 and df.loc[0, "path"] == "a.png"
    r = df.iloc[0]
    assert r["blurry"] == 1 and np.isnan(r["noisy"])  # 2 yes of 3: the majority; 1 / 1: blank
    assert r[[t for t in tax.tag_names if t not in ("blurry", "noisy")]].isna().all()
    assert (
        r["annotators"] == "user 1; b@x; user 3" and r["disagreements"] == "blurry: yes 2 / no 1; noisy: yes 1 / no 1"
    )
    f.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="list of tasks"):
        read_export(f, tax)
