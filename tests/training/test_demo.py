"""`creative-qa demo` at tiny size: the default recipe learns from the pool; the labels-only baseline is printed."""

import re

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from creative_qa.cli import main as cli
from creative_qa.scorer import Scorer
from creative_qa.taxonomy import load_taxonomy
from tests.conftest import TINY_OVERRIDES
from training import tracking

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it


def test_demo_trains_the_recipe_on_the_pool_registers_it_and_prints_the_labels_only_baseline(
    fresh_home, tmp_path, capsys
):
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("optim.epochs")]
    cli(
        ["demo", "--out", str(tmp_path / "demo"), "--labeled", "24", "--unlabeled", "16", "--test", "12"]
        + ["--epochs", "1", *overrides, "optim.steps_per_epoch=2"]
    )
    out = capsys.readouterr().out
    line = re.search(
        r"unlabeled data: 'default' \((\w+)\) test mAP ([\d.]+) vs 'supervised' \((\w+)\) on the labels alone "
        r"([\d.]+): ([+-][\d.]+)",
        out,
    )
    assert line, out[-2000:]
    assert line[1] == "defect_synthesis" and line[3] == "supervised"
    assert abs(float(line[2]) - float(line[4]) - float(line[5])) < 2e-3
    assert (tmp_path / "demo" / "unlabeled.csv").is_file()
    chose = re.search(
        r"^\[3/5\] chose (\w+): (\w+) has the highest validation mAP \(([\d.]+) vs (\w+) ([\d.]+)\)", out, re.M
    )
    assert chose and chose[1] == chose[2] and {chose[1], chose[4]} == {"default", "supervised"}, out[-2000:]
    assert float(chose[3]) >= float(chose[5])

    # Three runs in MLflow (the test's own home: nothing else ran there): the auto parent, and under it the two
    # candidates; the default's read the unlabeled pool, the supervised one's did not; the champion is the chosen.
    tracking.setup("creative-qa")
    client = MlflowClient()
    champion = client.get_model_version_by_alias("creative-qa", "champion")
    champ_run = client.get_run(champion.run_id)
    assert champ_run.data.params["method.name"] == {"default": "defect_synthesis", "supervised": "supervised"}[chose[1]]
    exp = champ_run.info.experiment_id
    (parent,) = client.search_runs([exp], "tags.creative_qa.recipe = 'auto'")
    assert parent.data.params["auto.chosen"] == chose[1]
    assert parent.data.tags["creative_qa.auto_reason"].startswith(chose[1] + " has the highest validation mAP")
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_method = {r.data.params["method.name"]: r for r in children}
    assert set(by_method) == {"defect_synthesis", "supervised"} and champion.run_id in {r.info.run_id for r in children}
    assert by_method["defect_synthesis"].data.params["data.unlabeled"].endswith("unlabeled.csv")
    assert by_method["supervised"].data.params["data.unlabeled"] in ("None", "")
    assert by_method["supervised"].data.params["data.labeled"] == champ_run.data.params["data.labeled"]
    vals = {m: r.data.metrics["val_mAP"] for m, r in by_method.items()}
    assert champ_run.data.metrics["val_mAP"] == max(vals.values())  # the choice is the higher validation mAP
    assert len(client.search_runs([exp])) == 3
    assert [v.version for v in client.search_model_versions("name='creative-qa'")] == [champion.version]

    # The table of creatives: the true defects are the test manifest's defect tags (no content tag).
    defects = load_taxonomy().group("defect")
    test = pd.read_csv(tmp_path / "demo" / "test.csv").set_index("path")
    rows = [ln for ln in out.splitlines() if ln.startswith("test/")]
    assert rows, out[-2000:]
    for ln in rows:
        # path, quality and prediction in fixed columns; then true defects and flags, two spaces apart
        path, (true, flags) = ln[:26].strip(), ln[43:].split("  ", 1)
        expected = [t for t in defects if test.loc[path, t] == 1]
        assert true == (", ".join(expected) or "-"), ln
        assert all(f in defects for f in flags.strip().split(", ") if f != "-"), ln

    # A flag is a claim: the demo names the champion's unreliable tags, and no row flags one.
    unreliable = Scorer("models:/creative-qa@champion").unreliable
    named = re.search(r"^unreliable for this model, never flagged: (\d+) of (\d+) tags$", out, re.M)
    assert named and (int(named[1]), int(named[2])) == (len(unreliable), len(load_taxonomy()))
    for t, why in unreliable.items():
        assert f"\n  {t}: {why}\n" in out
    assert re.search(r"^flags: thresholds for precision 0\.80 on validation, annotator rates estimated", out, re.M)
    for ln in rows:
        assert not set(ln[43:].split("  ", 1)[1].strip().split(", ")) & set(unreliable), ln
