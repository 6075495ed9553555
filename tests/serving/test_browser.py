"""GET / in a real browser: headless Debian Chromium driven by Playwright uploads a creative and reads the scores."""

import httpx
import pytest
from playwright.sync_api import sync_playwright

from serving.main import create_app
from serving.settings import Settings
from tests.serving.conftest import live_server, png_bytes, video_bytes

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


@pytest.fixture(scope="module")
def site(tiny_onnx):
    with live_server(create_app(Settings(model=str(tiny_onnx)))) as url:
        yield url


@pytest.fixture(scope="module")
def page(site):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        pg = browser.new_page()
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def test_page_uploads_an_image_and_renders_its_scores(site, page, tmp_path):
    data = png_bytes(11, size=(160, 240))
    (tmp_path / "ad.png").write_bytes(data)
    expected = httpx.post(f"{site}/v1/score", content=data, headers={"content-type": "image/png"}).json()
    thresholds = httpx.get(f"{site}/v1/model").json()["thresholds"]

    page.goto(site + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('v7')")
    page.set_input_files("#file", str(tmp_path / "ad.png"))
    page.wait_for_selector("#result:not([hidden])")

    assert page.inner_text("#quality") == f"{expected['quality']:.3f}"
    rows = page.query_selector_all("#tags .tag")
    assert [r.get_attribute("data-tag") for r in rows] == list(expected["tags"])
    for row in rows:
        tag = row.get_attribute("data-tag")
        assert row.query_selector(".prob").inner_text() == f"{expected['tags'][tag]:.3f}"
        width = row.query_selector(".bar").evaluate("e => parseFloat(e.style.width)")
        assert width == pytest.approx(100 * expected["tags"][tag], abs=0.051)
        left = row.query_selector(".threshold").evaluate("e => parseFloat(e.style.left)")
        assert left == pytest.approx(100 * thresholds.get(tag, 0.5), abs=0.051)
    flags = [e.inner_text() for e in page.query_selector_all("#flags .flag")]
    assert flags == expected["flags"]
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
