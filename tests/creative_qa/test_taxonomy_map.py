"""Taxonomy mappings: strict validation, every migration rule (never a guessed 1), the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from creative_qa.cli import main as cli
from creative_qa.manifest import ManifestError, label_matrix, read_manifest
from creative_qa.taxonomy import Tag, Taxonomy, TaxonomyError, load_taxonomy
from creative_qa.taxonomy_map import (
    MappingError,
    labels_for,
    load_mapping,
    mapping_from_dict,
    propose_mapping,
)

N = np.nan


def tax(version: str, *names: str, new: tuple[str, ...] = ()) -> Taxonomy:
    return Taxonomy("t", version, tuple(Tag(n, new=n in new) for n in names))


OLD = tax("1", "blur", "over", "under", "jpeg", "frame", "logo")
NEW = tax("2", "motion", "defocus", "exposure", "compression", "logo", "photo", new=("photo",))
SPEC = {
    "rename": {"jpeg": "compression"},
    "merge": {"exposure": ["over", "under"]},
    "split": {"blur": ["motion", "defocus"]},
    "add": ["photo"],
    "drop": ["frame"],
}


def mapping():
    return mapping_from_dict(SPEC, OLD, NEW, "m.yaml")


def migrate_one(**old: float) -> dict[str, float]:
    row = np.array([[old.get(t, 0.0) for t in OLD.tag_names]], dtype=np.float32)
    return dict(zip(NEW.tag_names, mapping().migrate(row)[0].tolist(), strict=True))


def same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == b


def test_rules_resolve_one_per_new_tag():
    m = mapping()
    assert [(r.kind, r.sources) for r in m.rules] == [
        ("split", ("blur",)),
        ("split", ("blur",)),
        ("merge", ("over", "under")),
        ("rename", ("jpeg",)),
        ("keep", ("logo",)),
        ("add", ()),
    ]
    assert m.dropped == ("frame",)
    assert m.shared() == {"exposure": ("over", "under"), "compression": ("jpeg",), "logo": ("logo",)}


def test_rename_and_keep_carry_every_value():
    for v in (1.0, 0.0, N):
        out = migrate_one(jpeg=v, logo=v)
        assert same(out["compression"], v) and same(out["logo"], v)


@pytest.mark.parametrize(
    ("over", "under", "expected"),
    [(1, 0, 1), (0, 1, 1), (1, N, 1), (N, 1, 1), (0, 0, 0), (0, N, N), (N, 0, N), (N, N, N)],
)
def test_merge_is_one_if_any_source_one_zero_only_if_all_zero(over, under, expected):
    assert same(migrate_one(over=over, under=under)["exposure"], expected)


@pytest.mark.parametrize(("parent", "child"), [(0, 0), (1, N), (N, N)])
def test_split_children_blank_unless_parent_zero(parent, child):
    out = migrate_one(blur=parent)
    assert same(out["motion"], child) and same(out["defocus"], child)


def test_added_tags_are_blank_and_dropped_tags_go():
    out = migrate_one(frame=1.0)
    assert np.isnan(out["photo"])
    assert "frame" not in out


def test_migration_never_invents_a_one():
    rng = np.random.default_rng(0)
    old = rng.choice([0.0, 1.0, N], size=(500, len(OLD))).astype(np.float32)
    new = mapping().migrate(old)
    oi = {t: j for j, t in enumerate(OLD.tag_names)}
    for j, r in enumerate(mapping().rules):
        ones = new[:, j] == 1
        if r.kind in ("split", "add"):
            assert not ones.any(), r.target  # a split child or an added tag is never a guessed 1
        else:
            assert ((old[:, [oi[s] for s in r.sources]] == 1).any(axis=1) >= ones).all(), r.target
    assert np.isnan(new).sum() > 0 and (new == 0).sum() > 0 and (new == 1).sum() > 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({**SPEC, "rename": {"jpg": "compression"}}, "rename.jpg: 'jpg' is not a tag of the old taxonomy"),
        ({**SPEC, "add": ["photo", "video"]}, "add[1]: 'video' is not a tag of the new taxonomy"),
        ({**SPEC, "drop": ["frame", "jpeg"]}, "drop[1]: old tag 'jpeg' is already mapped by rename.jpeg"),
        ({**SPEC, "add": ["photo", "motion"]}, "add[1]: new tag 'motion' is already produced by split.blur"),
        ({**SPEC, "drop": []}, "old tag 'frame' is not accounted for"),
        ({**SPEC, "add": []}, "new tag 'photo' is not accounted for"),
        ({**SPEC, "merge": {"exposure": ["over"]}}, "merge.exposure: a merge needs at least two old tags"),
        ({**SPEC, "swap": {}}, "swap: unknown field"),
    ],
)
def test_invalid_mappings_name_the_file_and_entry(spec, message):
    with pytest.raises(MappingError) as e:
        mapping_from_dict(spec, OLD, NEW, "m.yaml")
    assert str(e.value).startswith("m.yaml: ") and message in str(e.value)


def test_builtin_v1_to_v2_validates_and_covers_every_tag():
    m = load_mapping("v1_to_v2")
    v1, v2 = load_taxonomy("v1"), load_taxonomy("v2")
    assert m.old.tag_names == v1.tag_names and m.new.tag_names == v2.tag_names
    used = {s for r in m.rules for s in r.sources} | set(m.dropped)
    assert used == set(v1.tag_names)
    assert {r.kind for r in m.rules} == {"keep", "rename", "merge", "split", "add"}
    assert set(v2.new_tags) == {r.target for r in m.rules if r.kind == "add"}


def test_diff_proposes_a_valid_mapping_with_the_rename(tmp_path):
    text = propose_mapping(load_taxonomy("v1"), load_taxonomy("v2"), "v1", "v2")
    p = tmp_path / "proposal.yaml"
    p.write_text(text)
    m = load_mapping(p)
    assert m.rule("compression_artifacts").kind == "rename"
    assert m.rule("noisy").kind == "keep"
    assert "blurry" in m.dropped and m.rule("motion_blur").kind == "add"


def test_manifest_missing_a_tag_column_is_an_error_naming_it(tmp_path):
    p = tmp_path / "labels.csv"
    pd.DataFrame({"path": ["a.png"], "blur": [1], "over": [0]}).to_csv(p, index=False)
    df = read_manifest(p)
    with pytest.raises(ManifestError, match=r"labels.csv: no column for tag\(s\) 'under'"):
        label_matrix(df, ["blur", "over", "under"])
    # ... unless the taxonomy marks it new: then it is blank on purpose
    out = label_matrix(df, ["blur", "over", "under"], new=["under"])
    assert out[0, :2].tolist() == [1.0, 0.0] and np.isnan(out[0, 2])
    # a manifest with no tag column at all is unlabeled
    assert np.isnan(label_matrix(df[["path"]], ["under"])).all()


def test_taxonomy_new_flag_round_trips_and_is_validated(tmp_path):
    v2 = load_taxonomy("v2")
    assert v2.new_tags == ["photo_background", "striped_background"]
    assert Taxonomy.from_json(v2.to_json()) == v2
    assert "new" not in load_taxonomy().to_json()  # v1 metadata unchanged
    p = tmp_path / "t.yaml"
    p.write_text("name: t\nversion: '1'\ntags:\n  - {name: a, new: 'yes'}\n")
    with pytest.raises(TaxonomyError, match=r"tags\[0\].new"):
        load_taxonomy(p)


def test_labels_for_migrates_an_old_manifest_and_keeps_fresh_new_labels():
    df = pd.DataFrame(
        {
            "path": ["a", "b", "c"],
            **{t: [0, 0, 0] for t in OLD.tag_names},
            "photo": [1, None, 0],  # a few creatives already labeled for the new tag
        }
    )
    df.loc[0, "blur"] = 1
    out = labels_for(df, NEW, mapping())
    col = {t: out[:, j] for j, t in enumerate(NEW.tag_names)}
    assert np.isnan(col["motion"][0]) and col["motion"][1] == 0
    assert col["photo"][0] == 1 and np.isnan(col["photo"][1]) and col["photo"][2] == 0
    # a manifest of the new taxonomy is read as is
    new_df = pd.DataFrame({"path": ["a"], **{t: [1] for t in NEW.tag_names}})
    assert (labels_for(new_df, NEW, mapping()) == 1).all()


def test_cli_check_diff_and_migrate(tmp_path, capsys):
    old_p, new_p, map_p = tmp_path / "old.yaml", tmp_path / "new.yaml", tmp_path / "map.yaml"
    old_p.write_text(OLD.to_yaml())
    new_p.write_text(NEW.to_yaml())
    map_p.write_text(json.dumps({"old": "old.yaml", "new": "new.yaml", **SPEC}))
    cli(["taxonomy", "check", str(old_p), str(new_p), str(map_p)])
    assert "OK" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({**SPEC, "drop": []}))
    with pytest.raises(SystemExit) as e:
        cli(["taxonomy", "check", str(old_p), str(new_p), str(bad)])
    assert "bad.yaml" in str(e.value) and "'frame'" in str(e.value)

    cli(["taxonomy", "diff", str(old_p), str(new_p), "-o", str(tmp_path / "proposal.yaml")])
    assert "review it" in capsys.readouterr().out
    assert load_mapping(tmp_path / "proposal.yaml", OLD, NEW).rule("logo").kind == "keep"

    labels = tmp_path / "labels.csv"
    pd.DataFrame(
        {
            "path": ["a.png", "b.png", "c.png"],
            "blur": [1, 0, None],
            "over": [0, 0, 1],
            "under": [0, None, 0],
            "jpeg": [1, 0, None],
            "frame": [1, 1, 0],
            "logo": [0, 1, 1],
            "quality": [0.4, 0.9, 0.5],
        }
    ).to_csv(labels, index=False)
    out = tmp_path / "labels_v2.csv"
    cli(["taxonomy", "migrate", "--mapping", str(map_p), str(labels), "-o", str(out)])
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 3 and summary["taxonomy_version"] == "2"
    got = pd.read_csv(out)
    assert list(got.columns) == ["path", *NEW.tag_names, "quality"]
    assert got["motion"].isna().tolist() == [True, False, True] and got.loc[1, "motion"] == 0
    assert got["exposure"].isna().tolist() == [False, True, False]
    assert got.loc[0, "exposure"] == 0 and got.loc[2, "exposure"] == 1
    assert got["compression"].isna().tolist() == [False, False, True]
    assert got["photo"].isna().all() and got["quality"].tolist() == [0.4, 0.9, 0.5]


def test_cli_migrate_refuses_a_manifest_of_another_version(tmp_path):
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"path": ["a.png"], **{t: [0] for t in NEW.tag_names}}).to_csv(labels, index=False)
    (tmp_path / "old.yaml").write_text(OLD.to_yaml())
    (tmp_path / "new.yaml").write_text(NEW.to_yaml())
    (tmp_path / "map.yaml").write_text(json.dumps({"old": "old.yaml", "new": "new.yaml", **SPEC}))
    with pytest.raises(SystemExit, match="not a manifest of taxonomy v1"):
        cli(["taxonomy", "migrate", "--mapping", str(tmp_path / "map.yaml"), str(labels), "-o", str(tmp_path / "o")])
    assert not Path(tmp_path / "o").exists()
