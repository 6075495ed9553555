"""A tiny regime grid of ``benchmarks/learning.py`` (issue 23), run twice in one home: the first run trains
and measures every (cell, arm, seed), the second loads every result and trains nothing."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from creative_qa.taxonomy import load_taxonomy
from mlflow import MlflowClient
from tests.benchmark_runner import run_benchmark as _run

pytestmark = pytest.mark.slow  # trains, starts servers or runs a benchmark: `pytest -m 'not slow'` skips it

CELLS = ("n40-light", "n80-heavy")  # the --quick grid's
ARMS = ("floor", "default_rates", "rules")  # default_rates: the default given the floor's estimated rates, as auto
SPLITS = ("test", "foreign", "realphoto")


def _grid(tmp_path, out):
    args = ["benchmarks/learning.py", "--grid", "--quick", "--arms", ",".join(ARMS), "--out", str(out)]
    r = _run(args, tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout, json.loads(out.read_text())


def _grid_runs(home) -> list:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("bench-learning-grid")
    return client.search_runs([exp.experiment_id], max_results=100)


def test_learning_grid_quick_measures_then_loads(tmp_path):
    tags = load_taxonomy().tag_names
    stdout, first = _grid(tmp_path, tmp_path / "grid1.json")

    def first_rows(cell):
        return [r for r in first["rows"] if r["cell"] == cell]

    # every requested cell x arm x split is in the table, a macro mAP in [0, 1]
    assert list(first["cells"]) == list(CELLS)
    for cell, rep in first["cells"].items():
        assert [s["arm"] for s in rep["summary"]] == [*ARMS, "auto"]  # auto: derived from floor and default
        for s in rep["summary"]:
            assert all(0 <= s[f"{split}_mAP"] <= 1 for split in SPLITS), s
        for arm in ARMS:
            assert any(line.split()[:2] == [cell, arm] for line in stdout.splitlines()), (cell, arm)
        # the paired interval of default minus floor, per split, printed as a row of the table
        for split in SPLITS:
            iv = rep["interval"][split]
            assert iv["ci95"][0] <= iv["ci95"][1] and iv["pairs"] == 1
        assert f"{cell}  default - floor (95 % CI)" in stdout and f"{cell}  auto - floor (95 % CI)" in stdout
        # auto is the floor or the default of the seed, whichever has the higher validation mAP
        floor, default = (next(r for r in first_rows(cell) if r["arm"] == a) for a in ("floor", "default_rates"))
        # ... the default given the rates the floor estimated, as auto gives them (none from too few labels)
        from training.auto import estimated_rates

        rates = estimated_rates(floor["checkpoint"])
        said = f"the floor's estimated rates {rates[0]:.3f}" if rates else "the recipe's rates (the floor's estimate"
        assert f"{cell}-default_rates-s0: {said}" in stdout
        chosen = default if default["val_mAP"] > floor["val_mAP"] else floor
        auto = next(s for s in rep["summary"] if s["arm"] == "auto")
        assert (
            auto["test_mAP"] == chosen["test_mAP"]
            and auto["how"] == f"chose {'default' if chosen is default else 'supervised'} 1"
        )
        assert rep["interval_auto"]["test"]["diff"] == pytest.approx(chosen["test_mAP"] - floor["test_mAP"], abs=1e-9)
        # the rule checker beside the default, and the tags where it wins
        for split in SPLITS:
            assert set(rep["rules_wins"][split]) <= set(rep["rules"][split]) <= set(tags)
            won = {t for t, v in rep["rules"][split].items() if v["default"] is not None and v["rules"] > v["default"]}
            assert set(rep["rules_wins"][split]) == won
            assert f"{cell} {split}: rules beat the default on: " in stdout
        # the default's flags on every split: every tag, shares in [0, 1]
        for split in (*SPLITS, "heldout"):
            flags = rep["flags"][split]
            assert set(flags) == set(tags), split
            for v in flags.values():
                assert 0 <= v["flagged"] <= 1 and 0 <= v["true"] <= 1
                assert all(np.isnan(v[k]) or 0 <= v[k] <= 1 for k in ("precision", "recall"))
    # 2 cells x (floor, default_rates) x 1 seed trained; the rules are fitted, not trained
    assert first["status"] == {"trained": 4, "re-evaluated": 0, "loaded": 0, "computed": 2}
    assert len(_grid_runs(tmp_path)) == 1 + 4  # the parent and one run per trained model

    # auto's flags are its chosen model's stored probabilities at that model's thresholds, against the labels
    how = next(s for s in first["cells"]["n80-heavy"]["summary"] if s["arm"] == "auto")["how"]
    arm = "default_rates" if how.startswith("chose default") else "floor"
    row = next(r for r in first["rows"] if r["cell"] == "n80-heavy" and r["arm"] == arm)
    stored = next((tmp_path / "bench").rglob(f"results/n80-heavy/{arm}-s0-*.npz"))
    with np.load(stored) as z:
        probs = z["test_probs"]
    truth = pd.read_csv(first["data"]["test"])[tags].to_numpy(dtype=float)
    for j, t in enumerate(tags):
        flags = first["cells"]["n80-heavy"]["flags"]["test"][t]
        flagged = 0.0 if t in row["unreliable"] else np.mean(probs[:, j] >= row["thresholds"][t])
        assert flags["flagged"] == flagged and flags["reliable"] == float(t not in row["unreliable"])
        assert abs(flags["true"] - np.nanmean(truth[:, j])) < 1e-9
    # the real-photo split is the builder's manifest, with its exact labels
    assert "realphoto" in first["data"] and pd.read_csv(first["data"]["realphoto"])["role"].notna().all()

    # the annotator rates of each floor run, rebuilt from its stored checkpoint (benchmarks/annotator_rates.py):
    # the same validation split and predictions as the run's flag calibration, so the estimate it logged
    rates = tmp_path / "rates.json"
    grid_dir = Path(first["data"]["test"]).parent
    r = _run(["benchmarks/annotator_rates.py", "--grid-dir", str(grid_dir), "--out", str(rates)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for cell, seeds in json.loads(rates.read_text())["cells"].items():
        m = seeds["0"]
        floor = next(row for row in first["rows"] if row["cell"] == cell and row["arm"] == "floor")
        logged = client.get_run(floor["run_id"]).data.metrics
        assert m["run_id"] == floor["run_id"] and [t["tag"] for t in m["tags"]] == tags
        assert m["shared"]["miss_est"] == pytest.approx(logged["annotator_miss_rate"], abs=1e-6)
        assert m["shared"]["fp_est"] == pytest.approx(logged["annotator_fp_rate"], abs=1e-6)
        assert 0 <= m["shared"]["miss_true"] <= 1 and 0 <= m["shared"]["fp_true"] <= 1
    assert "shared rates over seeds" in r.stdout

    # auto's choice replayed from the stored runs (benchmarks/auto_choice.py): the same validation mAPs the runs
    # logged, and the "highest" rule keeps what the grid's auto kept
    choice = tmp_path / "choice.json"
    r = _run(["benchmarks/auto_choice.py", "--grid-dir", str(grid_dir), "--bootstrap", "20", "--out", str(choice)],
             tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    replayed = json.loads(choice.read_text())["rows"]
    assert sorted(row["cell"] for row in replayed) == sorted(CELLS)
    for row in replayed:
        runs = {a: next(x for x in first["rows"] if x["cell"] == row["cell"] and x["arm"] == a)
                for a in ("floor", "default_rates")}  # fmt: skip
        assert row["val floor"] == pytest.approx(runs["floor"]["val_mAP"], abs=1e-3)
        assert row["val default"] == pytest.approx(runs["default_rates"]["val_mAP"], abs=1e-3)
        how = next(x for x in first["cells"][row["cell"]]["summary"] if x["arm"] == "auto")["how"]
        assert row["highest"] == ("default" if how.startswith("chose default") else "floor")
        low = float(row["floor - default (95 %)"].strip("[]").split(",")[0])
        assert row["clear_lead"] == ("floor" if low > 0 else "default")
        assert row["test: highest"] == round(
            runs[{"floor": "floor", "default": "default_rates"}[row["highest"]]]["test_mAP"], 3
        )

    # the head refit's settings replayed on the stored runs (benchmarks/head_refit.py): these runs were refitted
    # at the defaults as they trained, so refitting the floor's features at the defaults gives back its own heads
    # (the default recipe's keep a share of their trained rows on the taught tags: no refit gives those back)
    refit = tmp_path / "refit.json"
    args = ["benchmarks/head_refit.py", "--grid-dir", str(grid_dir), "--cells", ",".join(CELLS), "--out", str(refit)]
    r = _run([*args, "--include-refitted"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    measured = json.loads(refit.read_text())
    assert len(measured["runs"]) == 4 and "chosen on held-out:" in r.stdout  # 2 cells x floor, default_rates
    for run in (r for r in measured["runs"] if r["arm"] == "floor"):
        for split in ("heldout", "test", "foreign", "realphoto"):
            assert run["mAP"]["0.3/0.03"][split] == pytest.approx(run["mAP"]["trained"][split], abs=2e-3), run
    # head.keep chosen on the default's runs, and each cell's default at it against its floor, paired
    keep = measured["keep"]
    assert keep["chosen"] in keep["ties"] and max(keep["heldout_by_mix"].values()) - 0.002 <= min(
        keep["heldout_by_mix"][n] for n in keep["ties"]
    )
    assert sorted(c["cell"] for c in keep["cells"]) == sorted(CELLS) and all(c["pairs"] == 1 for c in keep["cells"])
    for c in keep["cells"]:
        lo, hi = c["test_ci95"]
        assert lo <= hi and c["test"] - c["floor"]["test"] == pytest.approx(c["test_diff"], abs=1e-9)
        assert c["realphoto_tags"] and set(c["realphoto_tags"]) == set(c["realphoto_tags_refit"])
    r = _run(args, tmp_path)  # without the flag: no run trained before the refit, and it says so
    assert r.returncode != 0 and "trained without the head refit" in r.stderr

    # the same grid again: every result is loaded, nothing is trained, no run but the parent is made
    stdout2, second = _grid(tmp_path, tmp_path / "grid2.json")
    assert second["status"] == {"trained": 0, "re-evaluated": 0, "loaded": 4, "computed": 2}
    assert stdout2.count("    loaded: ") == 4
    assert len(_grid_runs(tmp_path)) == 1 + 4 + 1
    key = ("cell", "arm", "seed", "run_id", *(f"{s}_mAP" for s in SPLITS))
    assert [[r.get(k) for k in key] for r in second["rows"]] == [[r.get(k) for k in key] for r in first["rows"]]
    assert second["cells"]["n80-heavy"]["interval"] == first["cells"]["n80-heavy"]["interval"]

    # the tables again from the stored JSON and arrays, nothing trained (how a grid measured by an older
    # commit is reported with this code's tables)
    report = ["benchmarks/learning.py", "--report", str(tmp_path / "grid1.json"), "--bootstrap", "100"]
    r = _run([*report, "--out", str(tmp_path / "r.json")], tmp_path, timeout=600)  # --quick's resamples
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((tmp_path / "r.json").read_text())["cells"]
    for cell in CELLS:
        assert again[cell]["interval"] == first["cells"][cell]["interval"]
        assert again[cell]["interval_auto"] == first["cells"][cell]["interval_auto"]
        assert f"{cell}  auto - floor (95 % CI)" in r.stdout
    assert len(_grid_runs(tmp_path)) == 1 + 4 + 1  # no run made
