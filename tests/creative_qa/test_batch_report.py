"""The batch report: a self-contained page naming every tag of the model's taxonomy, with plots and thumbnails."""

import re
from html.parser import HTMLParser

import pandas as pd

from creative_qa.batch import batch_score
from creative_qa.scorer import Scorer
from creative_qa.taxonomy import load_taxonomy


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])


def test_report_is_written_with_plots_tags_thumbnails_and_errors(tiny_onnx, tiny_data, tmp_path):
    df = pd.read_csv(tiny_data["test"])
    (tmp_path / "broken.gif").write_bytes(b"GIF89a broken")
    paths = [str(tiny_data["test"].parent / p) for p in df["path"]] + [str(tmp_path / "broken.gif")]
    manifest = tmp_path / "m.txt"
    manifest.write_text("\n".join(paths))
    out = tmp_path / "scores.parquet"
    summary = batch_score(manifest, out, tiny_onnx, workers=1, progress=False)

    report = tmp_path / "scores.report.html"
    assert summary.report == str(report) and report.is_file()
    page = report.read_text()
    parsed = _Collect()
    parsed.feed(page)
    assert parsed.tags.count("svg") == 2  # quality histogram, flag rate per tag
    assert len(parsed.imgs) == 4 * 8 and all(src.startswith("data:image/jpeg;base64,") for src in parsed.imgs)
    for tag in load_taxonomy().tag_names:
        assert re.search(rf"<td>{tag}</td>", page), tag
    scorer = Scorer(tiny_onnx)
    assert f"{scorer.name} version {scorer.version}" in page
    assert "broken.gif" in page and "Errors (1)" in page
    assert f"{len(paths) - 1} scored" in page and "creatives/s" in page
    # the flag rate printed for a tag is the share of rows flagged for it in the output
    back = pd.read_parquet(out)
    tag = scorer.tags[0]
    rate = (back[tag].dropna() >= scorer.thresholds[tag]).mean()
    assert re.search(rf"<td>{tag}</td><td>[a-z]+</td><td>[0-9.]+</td><td>{rate:.1%}</td>", page)
    # a caption names the creative by its path and states each score once
    captions = re.findall(r"<figcaption[^>]*>(.*?)</figcaption>", page, re.S)
    assert len(captions) == 4 * 8
    assert all(re.search(r"quality [0-9.]+ · quality", c) is None for c in captions)
    shown = {c.split("<br>")[0] for c in captions}
    assert shown <= set(back["path"]) and any("/" in p for p in shown)  # the path, not the bare file name
