"""Flags, measured: does an exported model's flag policy keep its promises on data with true labels?

    python benchmarks/flags.py                                   # the champion, on the demo's test split
    python benchmarks/flags.py --model runs:/<id>/model --manifest data/test.csv --realphoto-n 1000
    python benchmarks/flags.py --quick                           # CI smoke: 24 real-photo creatives

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


def main(argv: list[str] | None = None) -> int:
    from creative_qa.paths import DEFAULT_MODEL_URI, home
    from creative_qa.scorer import Scorer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL_URI, help="ONNX path or models:/name@alias")
    ap.add_argument("--manifest", action="append", help="labelled manifest(s) (default: the demo's test.csv)")
    ap.add_argument("--realphoto-n", type=int, help="real-photo creatives (1000; --quick 24; 0: off)")
    ap.add_argument("--quick", action="store_true", help="CI smoke: a tiny real-photo split with fallback assets")
    ap.add_argument("--out", default="flags.json", help="JSON output")
    a = ap.parse_args(argv)

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
