"""How ``--recipe auto`` chooses between the floor and the default, replayed on the regime grid's stored runs.

    python benchmarks/auto_choice.py                  # every cell and seed with stored floor and default runs
    python benchmarks/auto_choice.py --bootstrap 2000

``auto`` trains the supervised floor and the default recipe on the team's data and keeps one, judged on the
validation labels the team has (``val_frac`` of its noisy labels: 60 at 400 labels). For each cell and seed
of ``learning.py --grid`` with both runs stored (the default's ``default_rates`` arm where there is one: what
``auto`` trains now; else ``default``), this rebuilds the runs' shared validation split, predicts it with
both checkpoints, and replays the choice rules side by side:

* ``highest``: the higher validation mAP (the rule until this benchmark);
* ``clear_lead``: the default unless the floor's validation lead is clear of resampling noise (the paired
  bootstrap's 95 % interval of floor minus default above 0).

It prints, per run, both validation mAPs, the interval, each rule's choice, and the test, foreign and
real-photo mAP of what each rule chose, against the better of the two on test (what an oracle would keep).
Writes ``benchmarks/results/auto_choice.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from annotator_rates import GRID_DIR, stored_runs, validation_predictions  # noqa: E402
from common import default_bench_dir, print_table, write_json  # noqa: E402

SPLITS = ("test", "foreign", "realphoto")


def clear_lead(low: float) -> bool:
    """Whether a lead is clear of resampling noise: the lower end of its paired 95 % interval is above 0."""
    return bool(np.isfinite(low) and low > 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid-dir", type=Path, default=None, help=f"the grid's data folder (<home>/bench/{GRID_DIR})")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/results/auto_choice.json")
    a = ap.parse_args()
    import learning

    from training.metrics import macro_map, per_tag_ap

    grid_dir = a.grid_dir or default_bench_dir(GRID_DIR)
    floors = {(c, s): (p, r) for c, s, p, r in stored_runs(grid_dir, "floor")}
    defaults = {(c, s): (p, r) for c, s, p, r in stored_runs(grid_dir, "default")}
    defaults |= {(c, s): (p, r) for c, s, p, r in stored_runs(grid_dir, "default_rates")}  # what auto trains now
    pairs = sorted(set(floors) & set(defaults))
    if not pairs:
        raise SystemExit(f"no cell with stored floor and default runs under {grid_dir}/results (learning.py --grid)")

    rows = []
    for cell, seed in pairs:
        (fckpt, rf), (dckpt, rd) = floors[cell, seed], defaults[cell, seed]
        *_, fval, fp = validation_predictions(fckpt, cell)
        *_, dval, dp = validation_predictions(dckpt, cell)
        fl = fval.labels.numpy()
        if [str(p) for p in fval.paths] != [str(p) for p in dval.paths]:
            raise SystemExit(f"{cell} seed {seed}: the two runs validated on different creatives")
        tags = [str(i) for i in range(fl.shape[1])]
        vf, vd = macro_map(per_tag_ap(fp, fl, tags)), macro_map(per_tag_ap(dp, fl, tags))
        lo, hi = learning.paired_bootstrap([fp], [dp], fl, n=a.bootstrap)
        runs = {"floor": rf, "default": rd}
        highest = "floor" if vf >= vd else "default"
        lead = "floor" if clear_lead(lo) else "default"
        oracle = "floor" if rf["test_mAP"] >= rd["test_mAP"] else "default"
        row = {"cell": cell, "seed": seed, "validation": len(fl), "val floor": round(vf, 3),
               "val default": round(vd, 3), "floor - default (95 %)": f"[{lo:+.3f}, {hi:+.3f}]",
               "highest": highest, "clear_lead": lead, "better on test": oracle}  # fmt: skip
        for s in SPLITS:
            row[f"{s}: highest"] = round(runs[highest][f"{s}_mAP"], 3)
            row[f"{s}: clear_lead"] = round(runs[lead][f"{s}_mAP"], 3)
            row[f"{s}: better"] = round(runs[oracle][f"{s}_mAP"], 3)
        rows.append(row)
        print(row, flush=True)
    print_table(rows, ["cell", "seed", "validation", "val floor", "val default", "floor - default (95 %)",
                       "highest", "clear_lead", "better on test"])  # fmt: skip
    summary = []
    for cell in sorted({r["cell"] for r in rows}):
        rs = [r for r in rows if r["cell"] == cell]
        line = {"cell": cell, "seeds": len(rs)}
        for rule in ("highest", "clear_lead", "better"):
            line[rule] = " / ".join(f"{np.mean([r[f'{s}: {rule}'] for r in rs]):.3f}" for s in SPLITS)
        line["right (highest, clear_lead)"] = (f"{sum(r['highest'] == r['better on test'] for r in rs)}, "
                                              f"{sum(r['clear_lead'] == r['better on test'] for r in rs)}")  # fmt: skip
        summary.append(line)
    print("\nmean test / foreign / real-photo mAP of what each rule keeps ('better': the better of the two on test)")
    print_table(summary, list(summary[0]))
    write_json(a.out, {"rows": rows, "summary": summary, "bootstrap": a.bootstrap})


if __name__ == "__main__":
    main()
