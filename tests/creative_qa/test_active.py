"""What to label next (creative_qa.active) and the Label Studio files (creative_qa.labelstudio), without a server."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from creative_qa.active import assign, dhash, entropy, hamming, recheck, select, tag_weights, weighted_kmeans
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
    # twenty near-copies of one uncertain design, ten of another a little less uncertain, many sure ones
    copies = np.clip(0.5 + rng.normal(0, 0.01, (20, 3)), 0, 1)
    other = np.clip(np.array([0.3, 0.7, 0.35]) + rng.normal(0, 0.01, (10, 3)), 0, 1)
    sure = np.clip(np.array([0.001, 0.999, 0.001]) + rng.normal(0, 0.0002, (30, 3)), 0, 1)
    probs = np.vstack([copies, other, sure])
    quality = np.full(len(probs), 0.5)
    w = np.ones(3) / 3
    order, unc, _, share, _, _ = select(probs, quality, w, 2)
    assert order[0] < 20 and 20 <= order[1] < 30  # the second pick is the other design, not another copy
    assert share[order[0]] > share[order[1]] > 0  # ... ranked by the uncertainty their clusters hold
    top2 = np.argsort(-unc)[:2]
    assert (top2 < 20).all()  # plain uncertainty ranking would have taken two copies
    # a labeled creative like the first design: what is labeled counts less, the batch goes to the second
    labeled = (copies[:1], quality[:1])
    assert 20 <= select(probs, quality, w, 1, labeled)[0][0] < 30
    # a budget over what is left takes all of it, each creative once
    assert sorted(select(probs, quality, w, 100)[0]) == list(range(len(probs)))


def test_copies_stay_out_whatever_the_budget_and_whatever_is_labeled():
    rng = np.random.default_rng(3)
    # forty designs exported twice each: the same hash, the model's outputs a hair apart; nothing labeled
    designs = rng.uniform(0.05, 0.95, (40, 4))
    probs = np.vstack([designs, np.clip(designs + 0.002, 0, 1)])
    quality = np.full(80, 0.5)
    hashes = np.concatenate([np.arange(40), np.arange(40)]).astype(np.uint64) * np.uint64(0x0101010101010101)
    w = np.ones(4) / 4
    scales = set()
    for budget in (10, 40, 60, 79):
        order, _, _, share, skipped, d0 = select(probs, quality, w, budget, pool_hashes=hashes)
        assert len({i % 40 for i in order}) == len(order)  # never both copies of a design
        assert len(order) == min(budget, 40) and skipped["near-duplicate of a chosen one"] == len(order)
        picked = [share[i] for i in order if share[i] > 0]
        assert picked == sorted(picked, reverse=True)  # the heaviest clusters first
        scales.add(round(d0, 9))
    assert len(scales) == 1 and scales.pop() > 0  # the duplicate scale does not move with the budget
    # a creative the model and the hash see as a labeled one is left out, and counted; also where most of the
    # pool is that one labeled creative (the median distance to the labeled set is then 0)
    for copies in (1, 60):
        pool = np.vstack([np.repeat(designs[:1], copies, 0), designs[1:]])
        pool_h = np.concatenate([np.repeat(hashes[:1], copies), hashes[1:40]])
        order, _, _, _, skipped, _ = select(pool, np.full(len(pool), 0.5), w, 50, (designs[:1], quality[:1]),
                                            pool_h, hashes[:1])  # fmt: skip
        assert skipped["near-duplicate of a labeled creative"] == copies and min(order) >= copies


def test_weighted_kmeans_finds_the_groups_and_the_weights_pull_the_centres():
    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (30, 2))])
    centres, member, d2 = weighted_kmeans(x, np.ones(len(x)), 2)
    found = centres[np.argsort(centres[:, 0])]
    assert np.allclose(found, [[0, 0], [5, 5]], atol=0.1)
    assert (member[:50] == member[0]).all() and (member[50:] == member[50]).all() and member[0] != member[50]
    assert np.allclose(d2, ((x - centres[member]) ** 2).sum(1))
    heavy = np.ones(len(x))
    heavy[0] = 1000.0  # one heavy creative drags its group's centre to itself
    centres = weighted_kmeans(x, heavy, 2)[0]
    assert np.abs(centres - x[0]).sum(1).min() < 0.01
    # the blocks do not change the answer
    m_small, d_small = assign(x, centres, block=7)
    m_all, d_all = assign(x, centres)
    assert (m_small == m_all).all() and np.allclose(d_small, d_all)


def test_near_duplicates_need_the_same_picture_and_the_same_view_of_the_model():
    rng = np.random.default_rng(1)
    base = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(np.kron(base[:8, :8], np.ones((8, 8, 1), dtype=np.uint8)))
    small = img.resize((48, 48))  # a re-export: same hash or nearly
    other = Image.fromarray(255 - np.asarray(img))
    h = np.array([dhash(img), dhash(small), dhash(other)], dtype=np.uint64)
    assert hamming(h, int(h[0]))[1] <= 6 < hamming(h, int(h[0]))[2]
    # four creatives of interest among six others (undecoded: no hash), so that the pool's distance scale is
    # its designs' and not its copies'
    others = np.array([[0.2, 0.2], [0.8, 0.8], [0.3, 0.6], [0.7, 0.2], [0.9, 0.5], [0.05, 0.4]])
    probs = np.vstack([[[0.5, 0.5], [0.5, 0.49], [0.5, 0.5], [0.1, 0.9]], others])
    quality = np.full(len(probs), 0.5)
    mask = [False] * 4 + [True] * 6
    hashes = np.ma.array([h[0], h[1], h[2], h[1]] + [0] * 6, mask=mask, dtype=np.uint64)  # 1 copies 0; 3 has 0's
    order, _, _, _, skipped, _ = select(probs, quality, np.ones(2) / 2, 10, pool_hashes=hashes)  # picture, not view
    assert 1 not in order and skipped["near-duplicate of a chosen one"] == 1 and set(order) == set(range(10)) - {1}
    # a flat picture hashes to 0 like any other value: two flat copies are duplicates; an undecoded one is not
    flat = dhash(Image.new("RGB", (32, 32), (90, 90, 90)))
    assert flat == 0
    hashes = np.ma.array([flat, flat, flat, h[2]] + [0] * 6, mask=[False, False, True, False] + [True] * 6,
                         dtype=np.uint64)  # fmt: skip
    order, _, _, _, skipped, _ = select(probs, quality, np.ones(2) / 2, 10, pool_hashes=hashes)
    assert len(order) == 9 and {2, 3} <= set(order) and skipped["near-duplicate of a chosen one"] == 1


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


def test_the_distances_are_exact_in_blocks():
    from creative_qa.active import nearest

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(30, 4))
    want = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(nearest(a, b, block=7), want, atol=1e-9)
    assert np.isinf(nearest(a, b[:0])).all()


def _export(tmp_path, items):
    f = tmp_path / "export.json"
    f.write_text(json.dumps(items))
    return f


def _ans(tag, choice):
    return {"from_name": tag, "to_name": "image", "type": "choices", "value": {"choices": [choice]}}


def test_an_update_replaces_answered_blanks_ties_and_keeps_the_rest(tmp_path):
    from creative_qa.labelstudio import merge
    from creative_qa.manifest import read_manifest

    tax = load_taxonomy()
    tags = tax.tag_names
    for p in ("a.png", "b.png", "c.png"):
        (tmp_path / p).write_bytes(b"")
    existing = pd.DataFrame([{"path": "a.png", **{t: 0 for t in tags}, "quality": 0.9},
                             {"path": "b.png", **{t: 1 for t in tags}, "quality": 0.5}])  # fmt: skip
    for with_meta in (False, True):
        df = existing.copy()
        if with_meta:  # an earlier import's empty columns: they read back as floats
            df["annotators"], df["disagreements"], df["ls_task"] = np.nan, np.nan, np.nan
        df.to_csv(tmp_path / "labels.csv", index=False)
        items = [
            {"id": 7, "data": {"path": str(tmp_path / "a.png")}, "annotations": [
                {"completed_by": 1, "result": [_ans("blurry", "yes"), _ans("noisy", "yes")]},
                {"completed_by": 2, "result": [_ans("blurry", "yes"), _ans("noisy", "no")]}]},
            {"id": 8, "data": {"path": str(tmp_path / "c.png")}, "annotations": [
                {"completed_by": 1, "result": [_ans("pixelated", "yes")]}]},
        ]  # fmt: skip
        new = read_export(_export(tmp_path, items), tax, tmp_path)
        new["abspath"] = [str(tmp_path / p) for p in new["path"]]
        out = merge(read_manifest(tmp_path / "labels.csv"), new, tags)
        a, b, c = (out[out["path"] == p].iloc[0] for p in ("a.png", "b.png", "c.png"))
        assert a["blurry"] == 1 and np.isnan(a["noisy"])  # answered replaces; a tie blanks the old 0
        assert a["low_contrast"] == 0 and a["quality"] == 0.9  # unanswered keeps
        assert a["disagreements"] == "noisy: yes 1 / no 1" and a["ls_task"] == 7
        assert (b[tags] == 1).all() and b["quality"] == 0.5  # not in the export: as it was
        assert c["pixelated"] == 1 and c[[t for t in tags if t != "pixelated"]].isna().all()  # appended
        assert "_ties" not in out.columns and len(out) == 3


def test_labels_import_keeps_the_manifest_format(tmp_path, capsys):
    from creative_qa.cli import main as cli

    tax = load_taxonomy()
    (tmp_path / "a.png").write_bytes(b"")
    pd.DataFrame([{"path": "a.png", **{t: 0 for t in tax.tag_names}}]).to_parquet(tmp_path / "labels.parquet")
    f = _export(tmp_path, [{"id": 1, "data": {"path": str(tmp_path / "a.png")},
                            "annotations": [{"completed_by": 1, "result": [_ans("watermark", "yes")]}]}])  # fmt: skip
    cli(["labels", "import", str(f), "--update", str(tmp_path / "labels.parquet")])
    assert json.loads(capsys.readouterr().out)["answered_tags"] == 1
    got = pd.read_parquet(tmp_path / "labels.parquet")  # still Parquet
    assert got.loc[0, "watermark"] == 1 and got.loc[0, "blurry"] == 0


def test_an_export_becomes_labels_blank_where_unanswered(tmp_path):
    tax = load_taxonomy()
    ans = _ans
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


def test_label_next_leaves_out_the_labeled_the_broken_and_the_repeated(tiny_data, tiny_onnx, tmp_path, capsys):
    from creative_qa.active import label_next
    from creative_qa.cli import main as cli
    from creative_qa.scorer import Scorer

    scorer = Scorer(tiny_onnx)
    unl = pd.read_csv(tiny_data["unlabeled"])
    lab = pd.read_csv(tiny_data["train_labeled"])
    root = Path(tiny_data["unlabeled"]).parent
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [str(root / p) for p in unl["path"]]  # absolute, while the labels are relative: the same files
    rows += [rows[0], str(root / lab["path"][0]), str(root / lab["path"][1]), str(tmp_path / "broken.png")]
    pool = tmp_path / "pool.csv"
    pd.DataFrame({"path": rows}).to_csv(pool, index=False)
    sel = label_next(scorer, pool, tiny_data["train_labeled"], 100, tmp_path / "w", workers=0, progress=False)
    assert sel.skipped["could not be scored"] == 1 and sel.skipped["already labeled"] == 2
    assert len(sel.chosen) + sum(sel.skipped[k] for k in sel.skipped if "near-duplicate" in k) == len(unl)
    assert sel.chosen["path"].is_unique and list(sel.chosen["rank"]) == list(range(1, len(sel.chosen) + 1))
    assert set(sel.chosen["abspath"]) <= set(rows[: len(unl)])
    # nothing left to choose: an empty batch with its columns, and no Label Studio project
    only_labeled = tmp_path / "only_labeled.csv"
    pd.DataFrame({"path": rows[-3:-1]}).to_csv(only_labeled, index=False)
    out = tmp_path / "next.csv"
    cli(["label-next", "--model", str(tiny_onnx), "--pool", str(only_labeled), "--labeled",
         str(tiny_data["train_labeled"]), "--budget", "5", "--out", str(out), "--label-studio",
         str(tmp_path / "ls"), "--workers", "0"])  # fmt: skip
    said = json.loads(capsys.readouterr().out)
    assert said["chosen"] == 0 and said["label_studio"] == "nothing chosen: no project written"
    assert list(pd.read_csv(out).columns[:3]) == ["path", "abspath", "rank"] and not (tmp_path / "ls").exists()
