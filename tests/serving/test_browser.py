"""GET / in a real browser: headless Debian Chromium driven by Playwright uploads a creative and reads the scores."""

import os
import shutil
from itertools import combinations
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from serving.main import create_app
from serving.settings import Settings
from tests.conftest import WEAK_TAGS
from tests.serving.conftest import live_server, png_bytes, video_bytes

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1200, "height": 900}
# the page's main boxes: none may overlap another (a hidden one has no box and is left out)
BOXES = {"heading": "h1", "model line": "#model", "drop zone": "#drop", "preview": "#preview", "result": "#result"}


def boxes(page) -> dict[str, dict[str, float]]:
    """Border boxes of the visible main parts of the page, by name."""
    out = {}
    for name, selector in BOXES.items():
        box = page.locator(selector).bounding_box()
        if box and box["width"] > 0 and box["height"] > 0:
            out[name] = box
    return out


def overlaps(found: dict[str, dict[str, float]]) -> list[str]:
    def meet(a, b):
        return (
            a["x"] < b["x"] + b["width"]
            and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"]
            and b["y"] < a["y"] + a["height"]
        )

    return [f"{m} overlaps {n}: {found[m]} / {found[n]}" for m, n in combinations(found, 2) if meet(found[m], found[n])]


def keep_artifact(path: Path) -> None:
    """Copy a test artifact (kept under the pytest tmp dir) to $CREATIVE_QA_ARTIFACTS too, when that is set."""
    folder = os.environ.get("CREATIVE_QA_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(folder) / path.name)


@pytest.fixture(scope="module")
def site(tiny_onnx_weak):
    with live_server(create_app(Settings(model=str(tiny_onnx_weak)))) as url:
        yield url


@pytest.fixture(scope="module")
def page(site):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        pg = browser.new_page(viewport=VIEWPORT)
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def test_page_uploads_an_image_and_renders_its_scores(site, page, tmp_path):
    data = png_bytes(11, size=(160, 240))
    (tmp_path / "ad.png").write_bytes(data)
    expected = httpx.post(f"{site}/v1/score", content=data, headers={"content-type": "image/png"}).json()
    model = httpx.get(f"{site}/v1/model").json()
    thresholds, unreliable = model["thresholds"], model["unreliable"]
    assert set(unreliable) == set(WEAK_TAGS)

    page.goto(site + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('v7')")
    before = boxes(page)
    assert set(before) == {"heading", "model line", "drop zone"}
    assert not overlaps(before)
    page.set_input_files("#file", str(tmp_path / "ad.png"))
    page.wait_for_selector("#result:not([hidden])")
    page.wait_for_function("(e => e.complete && e.naturalWidth > 0)(document.getElementById('preview'))")
    after = boxes(page)
    assert set(after) == set(BOXES.keys())
    assert not overlaps(after)
    assert after["heading"]["y"] < after["drop zone"]["y"] < after["preview"]["y"] < after["result"]["y"]
    shot = tmp_path / "page-after-upload.png"
    page.screenshot(path=str(shot), full_page=True)
    keep_artifact(shot)

    assert page.inner_text("#quality") == f"{expected['quality']:.3f}"
    rows = page.query_selector_all("#tags .tag")
    assert [r.get_attribute("data-tag") for r in rows] == list(expected["tags"])
    for row in rows:
        tag = row.get_attribute("data-tag")
        assert row.query_selector(".prob").inner_text() == f"{expected['tags'][tag]:.3f}"
        width = row.query_selector(".bar").evaluate("e => parseFloat(e.style.width)")
        assert width == pytest.approx(100 * expected["tags"][tag], abs=0.051)
        if tag in unreliable:  # greyed, no threshold line, the reason on hover
            assert "unreliable" in row.get_attribute("class") and row.query_selector(".threshold") is None
            assert unreliable[tag] in row.get_attribute("title")
            continue
        left = row.query_selector(".threshold").evaluate("e => parseFloat(e.style.left)")
        assert left == pytest.approx(100 * thresholds.get(tag, 0.5), abs=0.051)
    flags = [e.inner_text() for e in page.query_selector_all("#flags .flag")]
    assert flags == expected["flags"] and not set(flags) & set(WEAK_TAGS) and flags
    note = page.inner_text("#unreliable")
    assert note.startswith("Never flagged by this model") and all(t in note for t in WEAK_TAGS)
    assert page.is_hidden("#frames-section")


def test_page_shows_per_frame_scores_for_a_video_and_errors_for_junk(site, page, tmp_path):
    (tmp_path / "clip.mp4").write_bytes(video_bytes(2, fps=5))
    page.goto(site + "/")
    page.set_input_files("#file", str(tmp_path / "clip.mp4"))
    page.wait_for_selector("#frames-section:not([hidden])")
    assert len(page.query_selector_all("#frames tr.frame")) == 8

    (tmp_path / "junk.png").write_bytes(b"not an image")
    page.set_input_files("#file", str(tmp_path / "junk.png"))
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert page.inner_text("#error").startswith("422: not a decodable image")
    assert page.is_hidden("#result")


def test_the_overlap_check_catches_a_drop_zone_spilling_over_its_neighbours(site, page):
    page.goto(site + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('v7')")
    assert not overlaps(boxes(page))
    page.add_style_tag(content="#drop { display: inline; }")  # a label's default: its padding spills over
    assert any("drop zone" in o for o in overlaps(boxes(page)))
