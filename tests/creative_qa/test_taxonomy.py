from pathlib import Path

import pytest

from creative_qa.taxonomy import Taxonomy, TaxonomyError, load_taxonomy

V1_DEFECTS = [
    "blurry",
    "low_resolution",
    "jpeg_artifacts",
    "noisy",
    "overexposed",
    "underexposed",
    "low_contrast",
    "letterboxed",
    "watermark",
    "text_heavy",
    "pixelated",
]


def test_default_taxonomy_is_v1_of_the_design():
    tax = load_taxonomy()
    assert tax.version == "1"
    assert tax.group("defect") == V1_DEFECTS
    assert tax.group("content") == ["has_text", "has_logo", "has_cta"]
    assert all(0 < t.threshold < 1 for t in tax.tags)


def test_json_round_trip():
    tax = load_taxonomy()
    assert Taxonomy.from_json(tax.to_json()) == tax


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "tax.yaml"
    p.write_text(body)
    return p


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("name: x\nversion: 1\ntags:\n- {name: a}\n- {name: a}\n", "tags[1].name"),
        ("name: x\nversion: 1\ntags:\n- {name: a, threshold: 1.5}\n", "tags[0].threshold"),
        ("name: x\nversion: 1\ntags:\n- {name: a, colour: red}\n", "tags[0].colour"),
        ("name: x\nversion: 1\nowner: me\ntags:\n- {name: a}\n", "owner"),
        ("name: x\ntags:\n- {name: a}\n", "version"),
        ("name: x\nversion: 1\ntags:\n- {name: Bad Name}\n", "tags[0].name"),
    ],
)
def test_invalid_taxonomy_names_file_and_field(tmp_path, body, field):
    path = _write(tmp_path, body)
    with pytest.raises(TaxonomyError) as err:
        load_taxonomy(path)
    assert str(path) in str(err.value)
    assert field in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TaxonomyError, match="not found"):
        load_taxonomy(tmp_path / "nope.yaml")
