"""A client generated from the live /openapi.json by openapi-python-client imports and scores over loopback."""

import importlib
import io
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from creative_qa.scorer import Scorer
from serving.main import create_app
from serving.settings import Settings
from tests.serving.conftest import live_server, png_bytes

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

PACKAGE = "creative_qa_client"  # the generator's name for a spec titled "creative-qa"


def _generator() -> str:
    exe = Path(sys.executable).with_name("openapi-python-client")
    return str(exe) if exe.is_file() else "openapi-python-client"


@pytest.fixture(scope="module")
def site(tiny_onnx):
    with live_server(create_app(Settings(model=str(tiny_onnx), max_batch_files=4))) as url:
        yield url


@pytest.fixture(scope="module")
def client_package(site, tmp_path_factory, request):
    """Generate the client from the served spec (a local file: offline), and import it."""
    out = tmp_path_factory.mktemp("client")
    spec = out / "openapi.json"
    spec.write_bytes(httpx.get(f"{site}/openapi.json").content)
    config = out / "config.yaml"
    config.write_text("post_hooks: []\n")  # NOTE: its default hooks run ruff from PATH; the code is checked below
    r = subprocess.run(
        [_generator(), "generate", "--path", str(spec), "--output-path", str(out / "gen"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = r.stdout + r.stderr
    assert r.returncode == 0, log
    assert "Warning" not in log and "Unsupported" not in log, log  # every operation and body was generated
    sys.path.insert(0, str(out / "gen"))

    def forget() -> None:
        sys.path.remove(str(out / "gen"))
        for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[name]

    request.addfinalizer(forget)
    return importlib.import_module(PACKAGE)


def _api(module: str):
    return importlib.import_module(f"{PACKAGE}.api.{module}")


def test_every_generated_module_imports(client_package):
    root = Path(client_package.__file__).parent
    modules = sorted(p.relative_to(root).with_suffix("") for p in root.rglob("*.py") if p.name != "__init__.py")
    assert {"api/score/score_v1_score_post", "api/score/score_batch_v1_score_batch_post"} <= {
        m.as_posix() for m in modules
    }
    for m in modules:
        importlib.import_module(".".join((PACKAGE, *m.parts)))


def test_generated_client_scores_one_creative_a_batch_and_reads_the_model(client_package, site, tiny_onnx):
    from creative_qa_client.models import ScoreBatchV1ScoreBatchPostBody, Scores, ScoreV1ScorePostFilesBody
    from creative_qa_client.types import File

    client = client_package.Client(base_url=site, raise_on_unexpected_status=True, timeout=60)
    scorer = Scorer(tiny_onnx)
    data, other = png_bytes(5), png_bytes(6)

    info = _api("model.model_info_v1_model_get").sync(client=client)
    assert (info.name, info.version) == ("tiny", "7")

    score = _api("score.score_v1_score_post")
    form = ScoreV1ScorePostFilesBody(file=File(payload=io.BytesIO(data), file_name="ad.png", mime_type="image/png"))
    one = score.sync_detailed(client=client, body=form)
    assert one.status_code == 200 and isinstance(one.parsed, Scores)
    assert one.parsed.to_dict() == scorer.score_bytes(data)
    raw = score.sync(client=client, body=File(payload=io.BytesIO(data)), x_filename="ad.png")  # octet-stream
    assert raw.to_dict() == one.parsed.to_dict()

    batch = _api("score.score_batch_v1_score_batch_post")
    files = [
        File(payload=io.BytesIO(data), file_name="a.png", mime_type="image/png"),
        File(payload=io.BytesIO(b"junk"), file_name="b.png", mime_type="image/png"),
        File(payload=io.BytesIO(other), file_name="c.png", mime_type="image/png"),
    ]
    results = batch.sync(client=client, body=ScoreBatchV1ScoreBatchPostBody(files=files)).results
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].result.to_dict() == scorer.score_bytes(data)
    assert results[1].error.status == 422
    assert results[2].result.to_dict() == scorer.score_bytes(other)
