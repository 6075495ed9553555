"""Flags, measured: does an exported model's flag policy keep its promises on data with true labels?

    python benchmarks/flags.py                                   # the champion, on the demo's test split
    python benchmarks/flags.py --model runs:/<id>/model --manifest data/test.csv --realphoto-n 1000
    python benchmarks/flags.py --quick                           # CI smoke: 24 real-photo creatives
    python benchmarks/flags.py --simulate                        # the calibration on simulated validation sets

Scores each manifest (``--manifest``, default the demo's ``test.csv``) and the real-photo benchmark
(``benchmarks/realphoto.py``, ``--realphoto-n`` creatives, 0 leaves it out) through the model as
shipped (``Scorer``: ONNX, its flag policy), and prints per tag: reliable or not, the threshold, the
share of creatives flagged, the true share, the flags' precision and recall. Then the two promises
of DESIGN.md's "a flag is a claim", per split: every reliable tag's flag precision at or above the
model's target, and no reliable tag flagged on more than twice its true share; the tags that break
either are named. The flagged share is read from the scorer's own ``flags`` output, not recomputed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import flag_stats, realphoto_n, realphoto_set, write_json  # noqa: E402

MAX_OVER = 2.0  # a reliable tag may be flagged on at most this many times its true share


def measure(scorer: Any, manifest: Path) -> dict[str, Any]:
    """Per-tag flag figures on one manifest, and the tags breaking either promise."""
    from creative_qa.batch import score_manifest
    from creative_qa.manifest import label_matrix, read_manifest

    df = read_manifest(manifest)
    table, probs = score_manifest(scorer, df)
    ok = table["error"].isna().to_numpy()
    labels = label_matrix(df, scorer.tags)[ok]
    stats = flag_stats(probs[ok], labels, scorer.tags, scorer.flag_policy)
    shipped = table.loc[ok, "flags"].fillna("").str.split(",")
    for t, v in stats.items():  # the scorer's own flags agree with the policy applied here
        known = ~np.isnan(labels[:, scorer.tags.index(t)])
        v["flagged_by_scorer"] = float(np.mean([t in f for f in shipped[known]]))
    target = scorer.flag_policy.target_precision
    reliable = {t: v for t, v in stats.items() if v["reliable"]}
    low = {t: v["precision"] for t, v in reliable.items() if v["flagged"] > 0 and v["precision"] < target}
    over = {
        t: v["flagged"] / v["true"] if v["true"] else float("inf")
        for t, v in reliable.items()
        if v["flagged"] > MAX_OVER * v["true"]
    }
    return {"n": int(ok.sum()), "tags": stats, "below_target": low, "over_flagged": over}


def print_split(name: str, m: dict[str, Any], target: float) -> None:
    keys = ("threshold", "flagged", "true", "precision", "recall")
    print(f"\n{name} ({m['n']} creatives): flags under the model's policy")
    print(f"{'tag':<16}{'reliable':>9}" + "".join(f"{k:>10}" for k in keys))
    for t, v in m["tags"].items():
        cells = "".join(f"{v[k]:>10.3f}" if not np.isnan(v[k]) else f"{'-':>10}" for k in keys)
        print(f"{t:<16}{'yes' if v['reliable'] else 'no':>9}{cells}")
    low = ", ".join(f"{t} ({p:.2f})" for t, p in m["below_target"].items()) or "none"
    over = ", ".join(f"{t} ({r:.1f}x)" for t, r in m["over_flagged"].items()) or "none"
    print(f"{name}: reliable tags below precision {target:.2f}: {low}")
    print(f"{name}: reliable tags flagged on more than {MAX_OVER:.0f}x their true share: {over}")


def _draw(n: int, prevalence: np.ndarray, skill: np.ndarray, rng: np.random.Generator):
    """``n`` creatives' true labels and a model's probabilities: logit = 2 x skill x (truth - 0.5) + noise."""
    truth = (rng.random((n, len(prevalence))) < prevalence).astype(float)
    return 1 / (1 + np.exp(-(2 * skill * (truth - 0.5) + rng.normal(0, 1, truth.shape)))), truth


def simulate(draws: int = 30, tags: int = 10) -> list[dict[str, Any]]:
    """How often tags the calibration calls reliable truly reach the target: a model whose tag logit is
    skill x truth + noise (skill drawn per tag), ``tags`` tags at 5-15 % prevalence, 30 % / 5 % annotator
    noise on validation; true precision at each reliable tag's threshold on 5,000 fresh creatives. Per
    validation size and confidence (0.5: the posterior median, about the mean)."""
    from training.flags import calibrate_flags

    rows = []
    for n_val in (60, 300):
        for confidence in (0.5, 0.9):
            precision, reliable = [], 0
            for d in range(draws):
                rng = np.random.default_rng(d)
                prevalence, skill = rng.uniform(0.05, 0.15, tags), rng.uniform(1.0, 3.0, tags)
                p_val, t_val = _draw(n_val, prevalence, skill, rng)
                u = rng.random(t_val.shape)
                noisy = np.where(t_val == 1, u >= 0.3, u < 0.05).astype(float)
                names = [str(i) for i in range(tags)]
                policy = calibrate_flags(p_val, noisy, names, {}, 0.8, 5, confidence, seed=d)
                p_new, t_new = _draw(5000, prevalence, skill, np.random.default_rng(1000 + d))
                for i, name in enumerate(names):
                    f = policy.tags[name]
                    if f.reliable:
                        reliable += 1
                        flagged = p_new[:, i] >= f.threshold
                        precision.append(t_new[flagged, i].mean() if flagged.any() else np.nan)
            prec = np.array(precision)
            rows.append({
                "validation": n_val, "confidence": confidence, "reliable": f"{reliable} / {draws * tags}",
                "median_precision": float(np.nanmedian(prec)) if len(prec) else float("nan"),
                "below_0.8": float(np.mean(prec < 0.8)) if len(prec) else float("nan"),
                "below_0.6": float(np.mean(prec < 0.6)) if len(prec) else float("nan"),
            })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    from creative_qa.paths import DEFAULT_MODEL_URI, home
    from creative_qa.scorer import Scorer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL_URI, help="ONNX path or models:/name@alias")
    ap.add_argument("--manifest", action="append", help="labelled manifest(s) (default: the demo's test.csv)")
    ap.add_argument("--realphoto-n", type=int, help="real-photo creatives (1000; --quick 24; 0: off)")
    ap.add_argument("--quick", action="store_true", help="CI smoke: a tiny real-photo split with fallback assets")
    ap.add_argument("--out", default="flags.json", help="JSON output")
    ap.add_argument("--simulate", action="store_true", help="only the calibration's simulation (no model)")
    a = ap.parse_args(argv)
    if a.simulate:
        rows = simulate()
        cols = ("validation", "confidence", "reliable", "median_precision", "below_0.8", "below_0.6")
        print("  ".join(f"{c:>16}" for c in cols))
        for r in rows:
            print("  ".join(f"{r[c]:>16.2f}" if isinstance(r[c], float) else f"{r[c]!s:>16}" for c in cols))
        print(f"wrote {write_json(a.out, {'simulation': rows})}")
        return 0

    scorer = Scorer(a.model)
    pol = scorer.flag_policy
    print(
        f"{scorer.name} v{scorer.version}: target precision {pol.target_precision:.2f}, annotator rates "
        f"{pol.rates_source} ({pol.miss_rate:.0%} missed, {pol.fp_rate:.0%} false), "
        f"{len(scorer.unreliable)} of {len(scorer.tags)} tags unreliable"
    )
    for t, why in scorer.unreliable.items():
        print(f"  unreliable {t}: {why}")
    splits = {Path(m).stem: Path(m) for m in (a.manifest or [str(home() / "demo" / "test.csv")])}
    missing = [str(p) for p in splits.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"no manifest at {', '.join(missing)} (run `make demo`, or pass --manifest)")
    n = realphoto_n(a.realphoto_n, a.quick)
    if n:
        splits["realphoto"] = realphoto_set(n, a.quick)
    results = {}
    for name, manifest in splits.items():
        results[name] = measure(scorer, manifest)
        print_split(name, results[name], pol.target_precision)
    out = write_json(a.out, {"model": scorer.model_info, "policy": pol.to_dict(), "splits": results})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
