"""The Label Studio round trip against a real server (issue 27): `creative-qa label-next --label-studio` writes a
project, Label Studio's own SDK creates it, imports the tasks, submits two people's answers and exports them,
and `creative-qa labels import` turns the export into a label manifest."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from creative_qa.cli import main as cli
from creative_qa.media import is_video_path
from creative_qa.taxonomy import load_taxonomy

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

ROOT = Path(__file__).resolve().parents[2]
LS_BIN = ROOT / ".venv-ls" / "bin"  # Label Studio's own environment (`make label-studio`)
TOKEN = "0123456789abcdef0123456789abcdef01234567"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory, tiny_data):
    if not (LS_BIN / "label-studio").exists():
        pytest.fail(
            f"Label Studio's environment is missing ({LS_BIN}): `make label-studio` makes it (`make test` does)"
        )
    root = Path(tiny_data["unlabeled"]).parent  # the creatives are served from here
    data = tmp_path_factory.mktemp("ls-data")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "HOST"} | {
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # the SDK authenticates with the user's preset token
        "LABEL_STUDIO_USERNAME": "owner@example.com",
        "LABEL_STUDIO_PASSWORD": "owner-pass-123",
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root),
        "SENTRY_DSN": "",
        "HOME": str(data),
    }
    log = (data / "server.log").open("w")
    cmd = [str(LS_BIN / "label-studio"), "start", "--no-browser", "--port", str(port), "--data-dir", str(data / "db")]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"Label Studio did not start: {(data / 'server.log').read_text()[-3000:]}")
        time.sleep(1)
    yield base, root
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_label_next_to_label_studio_and_back(label_studio, tiny_data, tiny_onnx, tmp_path, capsys):
    base, root = label_studio
    tags = load_taxonomy().tag_names
    out, project = tmp_path / "next.csv", tmp_path / "ls"
    cli(["label-next", "--model", str(tiny_onnx), "--pool", str(tiny_data["unlabeled"]), "--labeled",
         str(tiny_data["train_labeled"]), "--budget", "5", "--out", str(out), "--label-studio", str(project),
         "--ls-root", str(root), "--workers", "0"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    chosen = pd.read_csv(out)
    assert summary["chosen"] == len(chosen) >= 3 and list(chosen["rank"]) == list(range(1, len(chosen) + 1))
    tasks = json.loads((project / "tasks.json").read_text())
    images = chosen[[not is_video_path(p) for p in chosen["path"]]]  # the interface shows images
    assert [t["data"]["path"] for t in tasks] == [str((root / p).resolve()) for p in images["path"]]
    assert len(tasks) >= 3, "the test needs three still creatives among the chosen"
    confident = [bool(((r[tags] >= 0.9) | (r[tags] <= 0.1)).any()) for _, r in images.iterrows()]

    # two people answer in Label Studio: a tie, an agreement, a tag left unanswered, a task nobody annotated
    answers = [
        {"task": 0, "user": "owner", "choices": {"blurry": "yes", "watermark": "no"}, "quality": 0.4},
        {"task": 0, "user": "annotator", "choices": {"blurry": "no", "watermark": "no"}},
        {"task": 1, "user": "owner", "choices": {"has_text": "yes"}},
        {"task": 2, "user": "owner", "choices": {"pixelated": "yes", "noisy": "no"}, "quality": 0.2},
        {"task": 2, "user": "annotator", "choices": {"pixelated": "yes"}, "quality": 0.4},
    ]
    export = tmp_path / "export.json"
    plan = {"base_url": base, "token": TOKEN, "label_config": str(project / "label_config.xml"),
            "tasks": str(project / "tasks.json"), "answers": answers, "export": str(export)}  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    driver = [str(LS_BIN / "python"), str(Path(__file__).with_name("driver.py")), str(tmp_path / "plan.json")]
    r = subprocess.run(driver, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    drove = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(drove["tasks"]) == len(tasks) and drove["with_predictions"] == sum(
        confident
    )  # the confident pre-answers

    labels = tmp_path / "labels.csv"
    cli(["labels", "import", str(export), "--out", str(labels)])
    said = json.loads(capsys.readouterr().out)
    got = pd.read_csv(labels)
    assert said["creatives"] == len(got) == 3  # only three tasks were annotated: the others give no row
    by_path = {str((labels.parent / r["path"]).resolve()): i for i, r in got.iterrows()}
    first, second, third = (got.loc[by_path[tasks[i]["data"]["path"]]] for i in range(3))
    owner, annotator = (f"user {drove['users'][k]}" for k in ("owner", "annotator"))
    # a tie is blank and visible; an agreement is the answer; quality is the annotators' mean
    assert np.isnan(first["blurry"]) and first["watermark"] == 0 and first["quality"] == pytest.approx(0.4)
    assert first["disagreements"] == "blurry: yes 1 / no 1" and first["annotators"] == f"{owner}; {annotator}"
    # one answered tag: 1; every tag nobody answered stays blank, never 0
    assert second["has_text"] == 1 and second[[t for t in tags if t != "has_text"]].isna().all()
    assert np.isnan(second["quality"]) and pd.isna(second["disagreements"])
    assert third["pixelated"] == 1 and third["noisy"] == 0 and third["quality"] == pytest.approx(0.3)

    # --update: the answers join the labeled manifest (new creatives appended, the old rows as they were)
    manifest = tmp_path / "labeled" / "train_labeled.csv"
    manifest.parent.mkdir()
    before = pd.read_csv(tiny_data["train_labeled"])
    before["path"] = [str(Path(tiny_data["train_labeled"]).parent / p) for p in before["path"]]
    before.to_csv(manifest, index=False)
    cli(["labels", "import", str(export), "--update", str(manifest)])
    capsys.readouterr()
    after = pd.read_csv(manifest)
    assert len(after) == len(before) + 3
    pd.testing.assert_frame_equal(after.loc[: len(before) - 1, before.columns], before, check_dtype=False)
    shutil.rmtree(project)
