"""``batch_score``: the command, one options object, the engines it drives, the summary it returns."""

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from creative_qa.batch.inputs import iter_paths, make_listing
from creative_qa.batch.local import WorkerPool, run_local
from creative_qa.batch.store import PartStore, RowBuffer
from creative_qa.machine import cpu_count
from creative_qa.manifest import ManifestError
from creative_qa.media import MEDIA_EXTS
from creative_qa.scorer import Scorer

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


@dataclass
class BatchSummary:
    """What a run did: counts, speed and where its results are."""

    inputs: int
    already_done: int
    scored: int
    errors: int
    rows: int
    seconds: float
    creatives_per_s: float
    output: str
    parts: str
    report: str | None
    engine: str
    workers: int
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"{self.scored + self.errors} creatives this run ({self.scored} scored, {self.errors} errors, "
            f"{self.already_done} already done) in {self.seconds:.1f} s, {self.creatives_per_s:.1f} creatives/s "
            f"[{self.engine}, {self.workers} workers]; {self.rows} rows -> {self.output}"
            + (f"; report {self.report}" if self.report else "")
        )


def default_report_path(output: str | Path) -> Path:
    out = Path(output)
    return out.with_name(out.stem + ".report.html")


@dataclass(frozen=True)
class BatchOptions:
    """How ``batch_score`` runs (its keyword arguments, see there)."""

    batch_size: int = 32
    workers: int | None = None
    engine: str = "local"
    content_hash: bool = False
    overwrite: bool = False
    report: str | Path | None | bool = True
    part_size: int = 1024
    ort_threads: int | None = None
    progress: bool = True

    @property
    def n_workers(self) -> int:
        return cpu_count() if self.workers is None else self.workers


def batch_score(input_path: str | Path, output: str | Path, model: str | Path | Scorer, **options: Any) -> BatchSummary:
    """Score every creative of a folder, manifest or path list into ``output`` (.parquet or .csv), resumably.

    Keyword arguments (``BatchOptions``):
        batch_size: frames per onnxruntime run (32).
        workers: decode/preprocess processes (default: the machine's cores; 0 = in this process).
            For ``engine="ray"``, the actor pool size when there is no GPU.
        engine: ``"local"`` (processes on this machine) or ``"ray"`` (Ray Data; a cluster with ``RAY_ADDRESS``).
        content_hash: key finished creatives by a hash of their bytes instead of size and mtime.
        overwrite: drop earlier parts and start fresh.
        report: the HTML report's path; ``True`` puts it next to the output, ``None``/``False`` skips it.
        part_size: rows per part file (what a kill can lose at most).
        ort_threads: onnxruntime intra-op threads on CPU (default: the cores the workers leave, at least 1).
        progress: a progress bar.
    """
    opts = BatchOptions(**options)
    if opts.engine not in ENGINES:
        raise ValueError(f"unknown engine {opts.engine!r} (choose from {', '.join(ENGINES)})")
    out = Path(output)
    if out.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise ValueError(f"{out}: the output must end in .parquet or .csv")
    t0 = time.perf_counter()
    try:
        next(iter_paths(input_path, 1), None)  # a bad input fails now, before a model loads or a worker starts
    except ManifestError as e:
        raise ValueError(str(e)) from e
    pool = WorkerPool(opts.n_workers) if opts.engine == "local" and opts.n_workers > 0 else None
    try:
        return _batch_score(input_path, out, model, pool, t0, opts)
    finally:
        if pool is not None:
            pool.shutdown()


def _batch_score(
    input_path: str | Path,
    out: Path,
    model: str | Path | Scorer,
    pool: WorkerPool | None,
    t0: float,
    opts: BatchOptions,
) -> BatchSummary:
    n_workers, engine, content_hash = opts.n_workers, opts.engine, opts.content_hash
    scorer = model if isinstance(model, Scorer) else Scorer(model)
    run_meta = {
        "model_name": scorer.name,
        "model_version": scorer.version,
        "model_sha256": scorer.model.sha256,
        "keys": "path+content_hash" if content_hash else "path+size+mtime",
        "tags": list(scorer.tags),
        "taxonomy_version": scorer.taxonomy.version,
    }
    store = PartStore(out, scorer.tags, run_meta, overwrite=opts.overwrite)
    try:
        try:
            listing = make_listing(input_path, content_hash, store.done_ids(), store.dir / "_todo.parquet")
        except ManifestError as e:
            raise ValueError(str(e)) from e
        already = listing.n_done
        if not listing.n_inputs:
            log.warning("%s lists no creatives (images: %s; videos too)", input_path, ", ".join(sorted(MEDIA_EXTS)))
        if already:
            log.info("%d of %d creatives already scored in %s; scoring the other %d", already, listing.n_inputs,
                     store.dir, listing.n_todo)  # fmt: skip
        bar = tqdm(total=listing.n_todo, desc="batch-score", unit="creative", disable=not opts.progress, smoothing=0.1)
        buf = RowBuffer(store, opts.part_size, bar)
        t_score = time.perf_counter()
        extra: dict[str, Any] = {}
        try:
            if listing.n_todo and engine == "ray":
                from creative_qa.batch.ray_engine import run_ray  # ray loads only when asked for

                extra = run_ray(scorer, listing, buf, workers=n_workers, batch_size=opts.batch_size)
            elif listing.n_todo:
                threads = opts.ort_threads or max(1, cpu_count() - n_workers)
                scorer.onnx.set_cpu_threads(threads)
                extra = {"ort_threads": threads}
                run_local(scorer, listing.chunks(8), buf, pool, opts.batch_size)
        except BaseException:  # an interrupt, a full disk: keep the rows already scored
            with contextlib.suppress(Exception):
                buf.flush()
            bar.close()  # NOTE: now, so that whatever is printed next is not followed by the bar
            raise
        buf.flush()
        bar.close()
        seconds = time.perf_counter() - t_score
        rate = (buf.scored + buf.errors) / seconds if seconds > 0 and listing.n_todo else 0.0
        stats = {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "engine": engine,
            "workers": n_workers,
            "creatives": buf.scored + buf.errors,
            "errors": buf.errors,
            "seconds": round(seconds, 3),
            "creatives_per_s": round(rate, 2),
            **extra,
        }
        store.record_run(stats)
        listing.todo.unlink(missing_ok=True)
        store.select(listing.ids)
        rows = store.combine()
        report_path = None
        if opts.report:
            from creative_qa.report import write_report  # PIL thumbnails: only with a report

            report_path = default_report_path(out) if opts.report is True else Path(opts.report)
            write_report(store, scorer, report_path, run=stats)
        summary = BatchSummary(
            inputs=listing.n_inputs,
            already_done=already,
            scored=buf.scored,
            errors=buf.errors,
            rows=rows,
            seconds=time.perf_counter() - t0,
            creatives_per_s=rate,
            output=str(out),
            parts=str(store.dir),
            report=str(report_path) if report_path else None,
            engine=engine,
            workers=n_workers,
            extra=extra,
        )
    finally:
        store.close()
    log.debug("%s", summary.line())  # the CLI prints it
    return summary
