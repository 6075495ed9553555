"""``creative-qa``: one command for the whole flow.

    creative-qa demo                      # synth -> train -> export -> register -> score, on CPU
    creative-qa synth --out data/         # synthetic creatives and manifests
    creative-qa train data.labeled=data/train_labeled.csv
    creative-qa export --checkpoint ~/.creative-qa/runs/<run>/last.pt
    creative-qa score ad.png clip.mp4     # JSON scores (default model: models:/creative-qa@champion)
    creative-qa batch-score --input data/test.csv --output scores.parquet
    creative-qa serve --port 8000
    creative-qa taxonomy diff v1 v2.yaml  # propose a mapping; `check` validates one, `migrate` rewrites labels
    creative-qa train --from models:/creative-qa@champion --taxonomy v2.yaml --mapping v1_to_v2.yaml ...
    creative-qa promote --eval test_v2.csv  # challenger -> champion unless a shared tag regresses
    creative-qa label-next --pool pool/ --labeled labels.csv --budget 200 --label-studio ls/
    creative-qa labels import ls-export.json --update labels.csv

Scoring commands need only the core install; ``train``, ``export`` and ``demo``
need the training extras (``pip install 'creative-qa[train]'``), and ``serve`` the
serving extras.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from creative_qa.paths import DEFAULT_MODEL_URI, MODEL_ENV

DEFAULT_MODEL = os.environ.get(MODEL_ENV, DEFAULT_MODEL_URI)


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.option_strings and not action.required and "%(default)" not in text
        if shown and action.default not in (None, False, argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("creative-qa")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout without installing
        return "unknown (not installed)"


def _extra(module: str, extra: str):
    """Import a module of another layer (training/serving) only when its command runs."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in {"torch", "timm", "mlflow", "fastapi", "uvicorn", "sklearn", "onnx"}:
            sys.exit(
                f"creative-qa: this command needs the '{extra}' extras: pip install 'creative-qa[{extra}]' "
                f"(missing module {e.name})"
            )
        raise


def cmd_synth(a: argparse.Namespace) -> None:
    from creative_qa.synth import SynthConfig, generate_dataset

    cfg = SynthConfig(size=a.size, size_max=a.size_max, video_frac=a.video_frac)
    paths = generate_dataset(
        a.out,
        n_labeled=a.labeled,
        n_unlabeled=a.unlabeled,
        n_test=a.test,
        seed=a.seed,
        cfg=cfg,
        miss_rate=a.miss_rate,
        fp_rate=a.fp_rate,
        blank_rate=a.blank_rate,
        quality_noise=a.quality_noise,
        workers=a.workers,
    )
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))


def cmd_score(a: argparse.Namespace) -> None:
    from creative_qa.media import MediaError
    from creative_qa.scorer import ModelNotFoundError, Scorer

    for f in a.files:
        if os.path.isdir(f):
            sys.exit(
                f"creative-qa score: {f} is a folder; score a folder (or a manifest) with "
                f"`creative-qa batch-score --input {f} --output scores.parquet`"
            )
    try:
        scorer = Scorer(a.model)
    except ModelNotFoundError as e:  # say what is missing and how to fix it, not an MLflow traceback
        sys.exit(f"creative-qa score: {e}")
    if scorer.unreliable:  # stderr: stdout stays the JSON
        print(
            f"note: {len(scorer.unreliable)} tags are unreliable for this model and never flagged "
            "(their probabilities are still given):",
            file=sys.stderr,
        )
        for tag, why in scorer.unreliable.items():
            print(f"  {tag}: {why}", file=sys.stderr)
    results = []
    for f in a.files:
        try:
            results.append({"path": f, **scorer.score_file(f)})
        except MediaError as e:
            results.append({"path": f, "error": str(e)})
    print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    if any("error" in r for r in results):
        sys.exit(1)


def cmd_batch(a: argparse.Namespace) -> None:
    from creative_qa.batch import batch_score

    try:
        summary = batch_score(
            a.input,
            a.output,
            a.model,
            batch_size=a.batch_size,
            workers=a.workers,
            engine=a.engine,
            content_hash=a.hash,
            overwrite=a.overwrite,
            report=False if a.no_report else (a.report or True),
            part_size=a.part_size,
            ort_threads=a.ort_threads,
        )
    except RuntimeError as e:  # another run holds the output; Ray is not installed
        sys.exit(f"creative-qa batch-score: {e}")
    except KeyboardInterrupt:
        # NOTE: the rows already scored were written to the parts before the interrupt reached here.
        sys.stderr.write(
            f"\ncreative-qa batch-score: interrupted; the creatives scored so far are kept in {a.output}.parts/. "
            "Run the same command again to score the rest.\n"
        )
        sys.exit(130)
    print(summary.line())
    if summary.errors and not summary.scored:
        sys.exit(
            f"creative-qa batch-score: none of the {summary.errors} creatives of this run could be scored "
            f"(see the error column of {summary.output}); check the input's paths"
        )


def cmd_label_next(a: argparse.Namespace) -> None:
    from creative_qa.active import label_next
    from creative_qa.manifest import ManifestError
    from creative_qa.scorer import ModelNotFoundError, Scorer

    try:
        scorer = Scorer(a.model)
    except ModelNotFoundError as e:
        sys.exit(f"creative-qa label-next: {e}")
    out = Path(a.out)
    work = Path(a.work) if a.work else out.with_name(f"{out.stem}.scores") / f"{scorer.name}-v{scorer.version}"
    focus = [t.strip() for t in a.tags.split(",") if t.strip()] if a.tags else None
    try:
        sel = label_next(scorer, a.pool, a.labeled, a.budget, work, focus, a.dup_bits, a.confident, a.recheck,
                         a.workers)  # fmt: skip
    except (ValueError, ManifestError) as e:
        sys.exit(f"creative-qa label-next: {e}")
    out.parent.mkdir(parents=True, exist_ok=True)
    sel.chosen.to_csv(out, index=False)
    recheck = out.with_name(f"{out.stem}.recheck.csv")
    sel.recheck.to_csv(recheck, index=False)
    summary = {"chosen": len(sel.chosen), "output": str(out), "recheck": len(sel.recheck),
               "recheck_output": str(recheck), "left_out": sel.skipped, "scores": str(work)}  # fmt: skip
    if a.label_studio and not len(sel.chosen):
        summary["label_studio"] = "nothing chosen: no project written"
    elif a.label_studio:
        from creative_qa.labelstudio import write_project

        root = a.ls_root or (a.pool if Path(a.pool).is_dir() else Path(a.pool).parent)
        version = f"{scorer.name} v{scorer.version}"
        try:
            files, videos = write_project(a.label_studio, sel.chosen, scorer.taxonomy, root, prefill=a.prefill,
                                          model_version=version)  # fmt: skip
        except ValueError as e:
            sys.exit(f"creative-qa label-next: {e}")
        summary["label_studio"] = {k: str(v) for k, v in files.items()} | {"document_root": str(Path(root).resolve())}
        if videos:
            summary["label_studio"]["videos_left_out"] = videos  # the interface shows images only
    summary["top"] = sel.chosen.head(5)[["path", "why"]].to_dict("records") if len(sel.chosen) else []
    print(json.dumps(summary, indent=2))


def cmd_labels(a: argparse.Namespace) -> None:
    from creative_qa.labelstudio import TIES, merge, read_export
    from creative_qa.manifest import ManifestError, read_manifest, write_manifest
    from creative_qa.taxonomy import load_taxonomy

    try:
        taxonomy = load_taxonomy(a.taxonomy)
        target = Path(a.update or a.out)
        new = read_export(a.export, taxonomy, target.parent)
        if a.update:
            old = read_manifest(a.update)
            new["abspath"] = [str(p if Path(p).is_absolute() else target.parent / p) for p in new["path"]]
            out = merge(old, new, taxonomy.tag_names)
        else:
            out = new.drop(columns=[TIES])
    except (ValueError, ManifestError, FileNotFoundError) as e:
        sys.exit(f"creative-qa labels import: {e}")
    write_manifest(out, target)
    tags = taxonomy.tag_names
    answered = int(new[tags].notna().to_numpy().sum())
    summary = {"creatives": len(new), "answered_tags": answered, "blank_tags": int(new[tags].isna().to_numpy().sum()),
               "with_disagreements": int((new["disagreements"] != "").sum()), "output": str(target),
               "updated": bool(a.update)}  # fmt: skip
    print(json.dumps(summary, indent=2))


def cmd_serve(a: argparse.Namespace) -> None:
    if a.model:
        os.environ["CREATIVE_QA_MODEL"] = a.model
    if a.access_log:
        os.environ["CREATIVE_QA_ACCESS_LOG"] = "true"
    uvicorn = _extra("uvicorn", "serve")
    settings = _extra("serving.settings", "serve").get_settings()
    uvicorn.run(
        "serving.main:create_app", factory=True, host=a.host, port=a.port, workers=1, access_log=settings.access_log
    )


def cmd_taxonomy(a: argparse.Namespace) -> None:
    from creative_qa.taxonomy import load_taxonomy
    from creative_qa.taxonomy_map import load_mapping, propose_mapping

    if a.action == "diff":
        text = propose_mapping(load_taxonomy(a.old), load_taxonomy(a.new), a.old, a.new)
        if a.out:
            with open(a.out, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {a.out}: review it, then `creative-qa taxonomy check {a.old} {a.new} {a.out}`")
        else:
            print(text, end="")
    elif a.action == "check":
        m = load_mapping(a.mapping, a.old, a.new)
        counts: dict[str, int] = {}
        for r in m.rules:
            counts[r.kind] = counts.get(r.kind, 0) + 1
        counts["drop"] = len(m.dropped)
        summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        change = f"v{m.old.version} ({len(m.old)} tags) -> v{m.new.version} ({len(m.new)} tags)"
        print(f"{a.mapping}: OK, {change}: {summary}")
    else:  # migrate
        from creative_qa.manifest import read_manifest

        m = load_mapping(a.mapping, a.old, a.new)
        df = read_manifest(a.labels)
        if not m.is_old_manifest(df):
            raise ValueError(f"{a.labels}: not a manifest of taxonomy v{m.old.version} (it lacks old tag columns)")
        out = m.migrate_frame(df)
        # NOTE: paths are relative to their manifest: rebase them onto the new manifest's folder.
        dest = Path(a.output).absolute().parent
        dest.mkdir(parents=True, exist_ok=True)
        out["path"] = [
            p if Path(p).is_absolute() else os.path.relpath(ap, dest)
            for p, ap in zip(df["path"].astype(str), df["abspath"], strict=True)
        ]
        if str(a.output).endswith((".parquet", ".pq")):
            out.to_parquet(a.output, index=False)
        else:
            out.to_csv(a.output, index=False)
        blank = {t: int(out[t].isna().sum()) for t in m.new.tag_names}
        print(
            json.dumps(
                {"rows": len(out), "output": a.output, "taxonomy_version": m.new.version, "blank_per_tag": blank},
                indent=2,
            )
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="creative-qa", description="Score advertising creatives for quality.", formatter_class=HelpFormatter
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser = functools.partial(sub.add_parser, formatter_class=HelpFormatter)  # type: ignore[method-assign]

    s = sub.add_parser("synth", help="generate synthetic creatives and manifests")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--labeled", type=int, default=1000, help="creatives with (noisy) labels: train_labeled.csv")
    s.add_argument("--unlabeled", type=int, default=1000, help="creatives without labels: unlabeled.csv")
    s.add_argument("--test", type=int, default=300, help="creatives with clean labels: test.csv")
    s.add_argument("--size", type=int, default=256, help="short side in pixels")
    s.add_argument("--size-max", type=int, default=0, help="draw each still's short side from --size to this")
    s.add_argument("--seed", type=int, default=0, help="the same seed gives the same creatives and labels")
    s.add_argument("--video-frac", type=float, default=0.03, help="share of creatives that are short videos")
    # NOTE: the demo and the learning benchmark use heavier noise (30 % / 5 % / 20 %: synth.ANNOTATOR_NOISE).
    s.add_argument("--miss-rate", type=float, default=0.1, help="annotators miss this share of positives (demo: 0.3)")
    s.add_argument("--fp-rate", type=float, default=0.02, help="share of negatives marked positive (demo: 0.05)")
    s.add_argument("--blank-rate", type=float, default=0.1, help="share of tag values left blank (demo: 0.2)")
    s.add_argument("--quality-noise", type=float, default=0.05, help="std of noise on quality labels")
    s.add_argument("--workers", type=int, default=None, help="processes rendering creatives (default: the cores)")
    s.set_defaults(fn=cmd_synth)

    t = sub.add_parser("train", help="train a model (MLflow-tracked)")
    t.add_argument(
        "--recipe",
        default=None,
        help="a recipe name from training/configs/ or a YAML path; default: auto (train the default recipe and "
        "supervised training on the same data, keep the one with the higher validation mAP)",
    )
    t.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with auto: train the default after the supervised floor only if its expected time still fits",
    )
    t.add_argument(
        "--resume",
        default=None,
        metavar="CHECKPOINT",
        help="continue a killed run from its last.pt (or an auto run from its output folder), with the settings "
        "it was started with",
    )
    t.add_argument(
        "--from",
        dest="parent",
        default=None,
        help="warm-start from a previous model: models:/name@alias, models:/name/version, runs:/<run id>, or a last.pt",
    )
    t.add_argument("--taxonomy", default=None, help="taxonomy YAML to train (default: the recipe's, else v1)")
    t.add_argument("--mapping", default=None, help="mapping from the parent's taxonomy to --taxonomy")
    t.add_argument(
        "--no-register",
        action="store_true",
        help="with --from: don't export and register the result as the challenger",
    )
    t.add_argument(
        "overrides", nargs="*", help="config overrides, e.g. data.labeled=data/train_labeled.csv optim.epochs=3"
    )
    t.set_defaults(fn=lambda a: _extra("training.cli", "train").cmd_train(a))

    e = sub.add_parser("export", help="export a checkpoint to ONNX and register it")
    e.add_argument("--checkpoint", required=True, help="a run's checkpoint: <output_dir>/last.pt")
    e.add_argument("--out", default=None, help="ONNX path (default: next to the checkpoint)")
    e.add_argument("--parity", default=None, help="manifest of real creatives for the torch/ONNX parity check")
    e.add_argument("--no-register", action="store_true", help="write the ONNX file only, no MLflow registry")
    e.add_argument("--name", default=None, help="registered model name (default: the run's register_as)")
    e.add_argument("--alias", default="champion", help="registry alias to point at the new version")
    e.set_defaults(fn=lambda a: _extra("training.cli", "train").cmd_export(a))

    li = sub.add_parser("label-issues", help="rank the labels most likely wrong (cross-validated), for review")
    li.add_argument("--labeled", required=True, help="label manifest to audit")
    li.add_argument("--out", default="label_issues.csv", help="the ranked list (CSV): path, tag, given, predicted")
    li.add_argument("--folds", type=int, default=3, help="cross-validation folds: a model per fold")
    li.add_argument("--recipe", default="default", help="what each fold trains (a recipe name or YAML path)")
    li.add_argument(
        "--self-confidence",
        action="store_true",
        help="baseline: one model on all labels, judging its own training data",
    )
    li.add_argument("--clean", default=None, help="clean twin of the manifest, to report precision@k")
    li.add_argument("--label-studio", default=None, help="also write a Label Studio project to recheck the top issues")
    li.add_argument("--ls-top", type=int, default=100, help="... from this many of the top issues")
    li.add_argument(
        "--ls-root", default=None, help="Label Studio's local-files document root (default: the manifest's)"
    )
    li.add_argument("overrides", nargs="*", help="config overrides, as for train")
    li.set_defaults(fn=lambda a: _extra("training.cli", "train").cmd_label_issues(a))

    tx = sub.add_parser("taxonomy", help="taxonomy versions: propose, check and apply a mapping")
    txs = tx.add_subparsers(dest="action", required=True)
    td = txs.add_parser("diff", help="propose a mapping from OLD to NEW (same names, renamed descriptions)")
    td.add_argument("old", help="old taxonomy YAML (or a built-in: v1, v2)")
    td.add_argument("new", help="new taxonomy YAML")
    td.add_argument("-o", "--out", default=None, help="write the proposal here (default: stdout)")
    tc = txs.add_parser("check", help="validate MAPPING between OLD and NEW")
    tc.add_argument("old", help="old taxonomy YAML (or a built-in: v1, v2)")
    tc.add_argument("new", help="new taxonomy YAML (or a built-in)")
    tc.add_argument("mapping", help="mapping YAML from OLD to NEW")
    tm = txs.add_parser("migrate", help="rewrite a label manifest into the new taxonomy (never invents a 1)")
    tm.add_argument("--mapping", required=True, help="mapping YAML (names its old and new taxonomies)")
    tm.add_argument("--old", default=None, help="old taxonomy (default: the mapping's `old:`)")
    tm.add_argument("--new", default=None, help="new taxonomy (default: the mapping's `new:`)")
    tm.add_argument("labels", help="manifest labeled in the old taxonomy (CSV or Parquet)")
    tm.add_argument("-o", "--output", required=True, help="migrated manifest (CSV or Parquet)")
    tx.set_defaults(fn=cmd_taxonomy)

    pr = sub.add_parser("promote", help="make the challenger the champion unless a shared tag regresses")
    pr.add_argument("--eval", required=True, help="labeled evaluation manifest (in the challenger's taxonomy)")
    pr.add_argument("--name", default="creative-qa", help="registered model name")
    pr.add_argument("--tolerance", type=float, default=0.02, help="largest AP drop allowed on a shared tag")
    pr.add_argument("--mapping", default=None, help="champion -> challenger taxonomy mapping (default: the run's)")
    pr.add_argument("--force", action="store_true", help="promote despite regressions (recorded in the registry)")
    pr.set_defaults(fn=lambda a: _extra("training.promote", "train").cmd_promote(a))

    sc = sub.add_parser("score", help="score files, print JSON")
    sc.add_argument("files", nargs="+", help="images or videos (for a folder: batch-score)")
    sc.add_argument("--model", default=DEFAULT_MODEL, help="ONNX path or models:/name@alias")
    sc.set_defaults(fn=cmd_score)

    b = sub.add_parser(
        "batch-score",
        help="score a folder, manifest or path list into Parquet/CSV, resumably, with an HTML report",
        description="Score every creative of a folder (recursive), a CSV/Parquet manifest with a 'path' column "
        "or a .txt file of paths. Rows go to <output>.parts/ as they are scored; rerunning the same command "
        "skips what is done. When all are done the parts are combined into --output and a report is written.",
    )
    b.add_argument("--input", required=True, help="folder, .csv/.parquet manifest or .txt list of paths")
    b.add_argument("--output", required=True, help="scores.parquet (default format) or scores.csv")
    b.add_argument("--model", default=DEFAULT_MODEL, help="ONNX path or models:/name@alias")
    b.add_argument("--batch-size", type=int, default=32, help="frames per onnxruntime call")
    b.add_argument("--workers", type=int, default=None, help="decode processes (default: the machine's cores)")
    b.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="ray: Ray Data (RAY_ADDRESS for a cluster)"
    )
    b.add_argument("--hash", action="store_true", help="key done creatives by content hash, not size and mtime")
    b.add_argument("--overwrite", action="store_true", help="drop earlier parts and start fresh")
    b.add_argument("--report", default=None, help="HTML report path (default: <output stem>.report.html)")
    b.add_argument("--no-report", action="store_true", help="skip the HTML report")
    b.add_argument("--part-size", type=int, default=1024, help="rows per part file (the most a kill can lose)")
    b.add_argument("--ort-threads", type=int, default=None, help="onnxruntime CPU threads (default: cores left over)")
    b.set_defaults(fn=cmd_batch)

    ln = sub.add_parser(
        "label-next",
        help="choose what to label next from the pool (ranked, diverse, with why); labels to recheck apart",
        description="Score the pool and the labeled set with the model, then choose BUDGET creatives to label: "
        "uncertain on the tags that matter (rare, unreliable, or --tags), one from each of BUDGET clusters of the "
        "pool in the model's output space (k-means weighted by that uncertainty, less near what is labeled), "
        "near-duplicates dropped (the heaviest creatives left fill in for a cluster they empty). "
        "Writes OUT (ranked, with why and the model's "
        "probabilities), OUT's .recheck.csv (known labels the model contradicts most), and with --label-studio "
        "a Label Studio project (label_config.xml, tasks.json with pre-annotations).",
    )
    ln.add_argument("--pool", required=True, help="unlabeled creatives: a folder or a manifest")
    ln.add_argument("--labeled", default=None, help="the label manifest so far (its creatives are not chosen again)")
    ln.add_argument("--budget", type=int, required=True, help="how many creatives to choose")
    ln.add_argument("--model", default=DEFAULT_MODEL, help="ONNX path or models:/name@alias")
    ln.add_argument("--tags", default=None, help="comma-separated tags that matter most (weighted x3)")
    ln.add_argument("--out", default="label_next.csv", help="the ranked batch (CSV)")
    ln.add_argument("--work", default=None, help="where the scores go (default: <out stem>.scores/<model>)")
    ln.add_argument("--recheck", type=int, default=50, help="known labels to recheck, at most")
    ln.add_argument("--confident", type=float, default=0.9, help="model probability that contradicts a label")
    ln.add_argument("--dup-bits", type=int, default=6, help="near-duplicate hash distance (of 64 bits; -1: off)")
    ln.add_argument("--workers", type=int, default=None, help="decode processes (default: the machine's cores)")
    ln.add_argument("--label-studio", default=None, help="also write a Label Studio project into this folder")
    ln.add_argument("--ls-root", default=None, help="Label Studio's local-files document root (default: the pool's)")
    ln.add_argument("--prefill", type=float, default=0.9, help="pre-answer a tag where the model is this sure")
    ln.set_defaults(fn=cmd_label_next)

    lb = sub.add_parser("labels", help="label manifests: import a labeling tool's answers")
    lbs = lb.add_subparsers(dest="labels_cmd", required=True)
    li_ = lbs.add_parser(
        "import",
        help="a Label Studio JSON export -> a label manifest (answered 1/0, unanswered blank)",
        description="Read a Label Studio JSON export of creative-qa tasks and write a label manifest: answered "
        "tags 1 or 0, tags nobody answered blank (never 0), the annotators, and every disagreement between "
        "them (the majority kept, blank on a tie). --update merges into an existing manifest: answered tags "
        "replace, unanswered ones keep their values, new creatives are appended.",
        formatter_class=HelpFormatter,
    )
    li_.add_argument("export", help="Label Studio export (JSON)")
    li_.add_argument("--out", default="labels.csv", help="the manifest to write")
    li_.add_argument("--update", default=None, help="update this manifest in place instead of writing --out")
    li_.add_argument("--taxonomy", default=None, help="taxonomy YAML (default: the built-in v1)")
    lb.set_defaults(fn=cmd_labels)

    sv = sub.add_parser("serve", help="run the HTTP API")
    sv.add_argument("--model", default=None, help="ONNX path or models:/name@alias (env CREATIVE_QA_MODEL)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port")
    sv.add_argument(
        "--access-log", action="store_true", help="log a line per request (env CREATIVE_QA_ACCESS_LOG; default off)"
    )
    sv.set_defaults(fn=cmd_serve)

    d = sub.add_parser("demo", help="synthesise, train, export, register and score, end to end on CPU")
    d.add_argument("--out", default=None, help="data folder (default: <home>/demo)")
    d.add_argument("--labeled", type=int, default=400, help="creatives with noisy labels")
    d.add_argument("--unlabeled", type=int, default=1600, help="creatives in the unlabeled pool (0: none)")
    d.add_argument("--test", type=int, default=300, help="creatives with clean labels, to measure on")
    d.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    d.add_argument(
        "--recipe",
        default="auto",
        help="what is trained; auto (the default): the default recipe and supervised training on the labels "
        "alone, the one with the higher validation mAP exported and registered",
    )
    d.add_argument(
        "--baseline",
        default="demo",
        help="with a --recipe other than auto: recipe trained on the labels alone for comparison; '' to skip",
    )
    d.add_argument("overrides", nargs="*", help="config overrides, as for train")
    d.set_defaults(fn=lambda a: _extra("training.cli", "train").cmd_demo(a))
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args.fn(args)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"creative-qa {args.command}: {e}")


if __name__ == "__main__":
    main()


__all__ = ["DEFAULT_MODEL", "build_parser", "main"]
