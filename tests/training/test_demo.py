"""`creative-qa demo` at tiny size: the default recipe learns from the pool; the labels-only baseline is printed."""

import re

from mlflow.tracking import MlflowClient

from creative_qa.cli import main as cli
from tests.conftest import TINY_OVERRIDES
from training import tracking


def test_demo_trains_the_recipe_on_the_pool_registers_it_and_prints_the_labels_only_baseline(tmp_path, capsys):
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("optim.epochs")]
    cli(
        ["demo", "--out", str(tmp_path / "demo"), "--labeled", "24", "--unlabeled", "16", "--test", "12"]
        + ["--epochs", "1", *overrides, "optim.steps_per_epoch=2"]
    )
    out = capsys.readouterr().out
    line = re.search(
        r"unlabeled data: 'default' \((\w+)\) test mAP ([\d.]+) vs 'demo' \((\w+)\) on the labels alone ([\d.]+): "
        r"([+-][\d.]+)",
        out,
    )
    assert line, out[-2000:]
    assert line[1] == "defect_synthesis" and line[3] == "supervised"
    assert abs(float(line[2]) - float(line[4]) - float(line[5])) < 2e-3
    assert (tmp_path / "demo" / "unlabeled.csv").is_file()

    # Two runs in MLflow: the champion's read the unlabeled pool, the baseline's did not.
    tracking.setup("creative-qa")
    client = MlflowClient()
    champion = client.get_model_version_by_alias("creative-qa", "champion")
    champ_run = client.get_run(champion.run_id)
    assert champ_run.data.params["method.name"] == "defect_synthesis"
    assert champ_run.data.params["data.unlabeled"].endswith("unlabeled.csv")
    runs = client.search_runs([champ_run.info.experiment_id], "params.`method.name` = 'supervised'")
    assert len(runs) == 1 and runs[0].data.params["data.unlabeled"] in ("None", "")
    assert runs[0].data.params["data.labeled"] == champ_run.data.params["data.labeled"]
