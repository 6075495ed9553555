"""The README is the user's path: its commands run as written, in order, in a fresh home.

Every ```` ```bash ```` block of README.md is joined, in order, into one script and run with
bash in an empty folder, with ``HOME`` a fresh folder (so ``~/.creative-qa`` is new) and the
embedded MLflow store, then once more against a real ``mlflow server`` on loopback. Editing a
command in the README changes what runs here. Only sizes are made small (``SMALLER``): fewer
and smaller synthetic creatives, the tiny test network, a couple of steps, a free port. The
one ```` ```sh ```` block holds ``make demo`` and ``make test``: the latter is this suite, the
former runs ``creative-qa demo`` (``tests/training/test_demo.py`` runs it small).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from creative_qa.media import is_video_path
from creative_qa.taxonomy import load_taxonomy
from tests.conftest import TINY_OVERRIDES
from tests.mlflow_server import free_port, mlflow_server

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOT_RUN = {"make demo", "make test"}  # the sh block: see the module's doc
TINY_TRAIN = " ".join([*TINY_OVERRIDES, "optim.steps_per_epoch=2", "data.workers=1"])


def blocks(text: str) -> list[tuple[str, str]]:
    """The README's fenced blocks as (language, body), in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


def commands(body: str) -> list[str]:
    """A block's commands, one per logical line (backslash continuations joined, comments kept)."""
    return [c.strip() for c in re.sub(r"\\\n\s*", "", body).splitlines() if c.strip()]


def smaller(cmd: str, port: int) -> str:
    """The same command with only its sizes made small."""
    if cmd.startswith("creative-qa synth"):
        for flag, n in (("--labeled", 40), ("--unlabeled", 8), ("--test", 14)):
            cmd = re.sub(rf"{flag} \d+", f"{flag} {n}", cmd)
        return cmd + " --size 128 --workers 1"
    if cmd.startswith(("creative-qa train", "creative-qa label-issues")) and "--resume" not in cmd:
        cmd, _, comment = cmd.partition("#")
        cmd = cmd.rstrip() + " " + TINY_TRAIN + (" --folds 2" if "label-issues" in cmd else "")
    if cmd.startswith("creative-qa labels import"):
        # NOTE: between label-next and the import a person labels the tasks in Label Studio and exports them
        # (tests/labelstudio runs that round trip against a real server); here a stand-in answers as they would.
        export = cmd.split()[3]
        tasks = str(Path(export).parent / "tasks.json")
        return f"python {ROOT / 'tests' / 'labelstudio' / 'annotator.py'} {tasks} {export} && {cmd}"
    if cmd.startswith("creative-qa promote"):
        # NOTE: promote's answer is a decision: 0 promoted, 3 refused (told apart from a failure, 1).
        return f"{{ {cmd}; }} || [ $? -eq 3 ]"
    return cmd.replace("8000", str(port))


def journey(skip: tuple[str, ...] = ()) -> str:
    text = README.read_text()
    found = blocks(text)
    shown = {c.split("#")[0].strip() for lang, body in found if lang == "sh" for c in commands(body)}
    assert shown == NOT_RUN, f"a README command that no test runs: {shown - NOT_RUN}"
    port = free_port()
    lines = ["set -euo pipefail", "set -x"]
    for lang, body in found:
        if lang == "bash":
            lines += [smaller(c, port) for c in commands(body) if not any(s in c for s in skip)]
    return "\n".join(lines) + "\n"


def run_journey(tmp_path: Path, env_extra: dict[str, str], skip: tuple[str, ...] = ()) -> Path:
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CREATIVE_QA_", "RAY_"))}
    env |= {
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **env_extra,
    }
    script = work / "journey.sh"
    script.write_text(journey(skip))
    log = tmp_path / "journey.log"
    with log.open("wb") as out:
        r = subprocess.run(["bash", str(script)], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1500)
    text = log.read_text(errors="replace")
    assert r.returncode == 0, f"a README command failed as written:\n{text[-6000:]}"
    # what a user reads on the way: no traceback, no error-level noise from a library
    for noise in ("Traceback", "max_restarts", "Progress bars disabled"):
        assert noise not in text, f"{noise!r} in the journey's output:\n{text[text.index(noise) - 2000 :][:4000]}"
    return work


def _check_outputs(work: Path, ray: bool = True) -> str:
    """What the journey left, checked as a user would: returns its log-independent summary."""
    test_files = sorted(p for p in (work / "data" / "test").iterdir() if p.is_file())
    scores = pd.read_parquet(work / "scores.parquet")
    assert len(scores) == len(test_files) and scores["error"].isna().all()  # every creative, the registry model
    assert (work / "scores.report.html").is_file()
    if ray:
        ray_scores = pd.read_csv(work / "scores_ray.csv")
        assert len(ray_scores) == len(test_files) and ray_scores["error"].isna().all()
    # label-next chose from the pool, wrote a Label Studio project; the answers joined the labels
    chosen, pool = pd.read_csv(work / "label_next.csv"), pd.read_csv(work / "data" / "unlabeled.csv")
    assert 0 < len(chosen) <= len(pool) and chosen["why"].str.startswith("uncertain: ").all()
    tasks = json.loads((work / "label_studio" / "tasks.json").read_text())
    images = [str((work / "data" / p).resolve()) for p in chosen["path"] if not is_video_path(p)]
    assert [t["data"]["path"] for t in tasks] == images  # the interface shows images: videos are listed apart
    labeled = pd.read_csv(work / "data" / "train_labeled.csv")
    added = labeled[labeled["path"].isin(chosen["path"])]
    assert len(labeled) == 40 + len(tasks) and len(added) == len(tasks)
    assert added[load_taxonomy().tag_names].notna().sum(axis=1).ge(1).all()  # what the stand-in answered
    v2 = pd.read_csv(work / "data_v2" / "train_labeled.csv")
    assert "motion_blur" in v2.columns and "blurry" not in v2.columns
    assert all((work / "data_v2" / p).is_file() for p in v2["path"])  # paths rebased onto the new folder
    return "ok"


@pytest.mark.slow
def test_readme_commands_run_as_written_in_a_fresh_home(tmp_path):
    work = run_journey(tmp_path, {})
    _check_outputs(work)
    issues = pd.read_csv(work / "label_issues.csv")
    assert {"path", "tag", "given", "predicted", "score"} <= set(issues.columns) and len(issues) > 0
    assert all(Path(p).is_file() for p in issues["path"])  # judged the user's files, not missing copies
    recheck = json.loads((work / "recheck" / "tasks.json").read_text())
    top = {p for p in issues.head(100)["path"] if not is_video_path(p)}
    assert len(recheck) == len(top)  # one task per (still) creative of the top issues
    assert all("predictions" not in t and t["data"]["model"].startswith("model: no scores | chosen because recheck")
               for t in recheck)  # fmt: skip
    store = tmp_path / "home" / ".creative-qa"
    assert (store / "mlflow.db").is_file()  # the embedded store, in the fresh home
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=100)
    names = [r.info.run_name for r in runs]
    assert len(names) == len(set(names)), f"runs share names: {names}"
    # `train --from` registered a v2 model; `promote` made it the champion or left the v1 champion
    versions = {int(v.version): v for v in client.search_model_versions("name='creative-qa'")}
    assert sorted(versions) == [1, 2] and versions[2].tags["taxonomy_version"] == "2"
    champion = client.get_model_version_by_alias("creative-qa", "champion")
    assert str(champion.version) in ("1", "2")


@pytest.mark.slow
def test_readme_journey_through_a_real_mlflow_server(tmp_path):
    with mlflow_server(tmp_path) as url:
        # NOTE: label-issues and Ray do not touch the store beyond what the rest does.
        work = run_journey(tmp_path, {"MLFLOW_TRACKING_URI": url}, skip=("label-issues", "--engine ray"))
        _check_outputs(work, ray=False)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(url)
        champion = client.get_model_version_by_alias("creative-qa", "champion")
        assert int(champion.version) >= 1
    assert not (tmp_path / "home" / ".creative-qa" / "mlflow.db").exists()  # nothing went to the embedded store


def test_every_readme_command_is_run_or_named(tmp_path):
    """The parser sees every block; a command added to the README is either run or must be named here."""
    script = journey()
    assert "creative-qa batch-score --input data/test --output scores.parquet" in script
    assert "creative-qa train --resume runs/first" in script  # only the run's folder
    assert script.count("creative-qa train") >= 3 and "kill %1" in script
