"""The batch report: one self-contained HTML page to look at (not read) a batch of scores.

It shows the run (model, taxonomy, counts, throughput), the quality distribution, the
flag rate and mean probability of every tag of the model's taxonomy, thumbnails of the
lowest and highest quality creatives and of the least and most confident ones (the
distance of the nearest tag probability to its threshold), and the errors. Plots are
inline SVG and thumbnails small JPEG data URIs, so the page works offline and alone.
Everything is computed in one streaming pass over the output parts: memory does not
grow with the number of rows.
"""

from __future__ import annotations

import base64
import heapq
import html
import io
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from creative_qa.flags import FlagPolicy
from creative_qa.media import MediaError, decode_file

if TYPE_CHECKING:
    from creative_qa.batch.store import PartStore
    from creative_qa.scorer import Scorer

log = logging.getLogger(__name__)

BINS = 20
GALLERY = 8
THUMB = 128
MAX_ERROR_ROWS = 50


def _abspath(key: str, keys_mode: str) -> str:
    # key = "abspath|size|mtime" or "abspath|hash": split from the right, a path may hold "|".
    return key.rsplit("|", 1 if keys_mode == "path+content_hash" else 2)[0]


class _TopK:
    """The k largest (score, item) seen, in bounded memory."""

    def __init__(self, k: int):
        self.k, self.heap, self.n = k, [], 0

    def push(self, score: float, item: tuple) -> None:
        self.n += 1
        entry = (score, self.n, item)
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, entry)
        elif score > self.heap[0][0]:
            heapq.heapreplace(self.heap, entry)

    def best(self) -> list[tuple]:
        return [(s, it) for s, _, it in sorted(self.heap, reverse=True)]


def _thumb(path: str) -> str | None:
    """A small JPEG data URI of the creative's first frame, or None when it cannot be read now."""
    try:
        frame = decode_file(path, max_frames=1)[0].pixels
    except (MediaError, OSError, IndexError):
        return None
    img = Image.fromarray(frame)
    img.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _svg_histogram(counts: np.ndarray, width: int = 640, height: int = 200) -> str:
    pad, n = 30, len(counts)
    top = max(int(counts.max()), 1)
    bw = (width - 2 * pad) / n
    bars = []
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * c / top
        x, y = pad + i * bw, height - pad - h
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" fill="#4a78c2">'
            f"<title>{i / n:.2f}-{(i + 1) / n:.2f}: {int(c)}</title></rect>"
        )
    ticks = "".join(
        f'<text x="{pad + v * (width - 2 * pad):.1f}" y="{height - 10}" font-size="11" '
        f'text-anchor="middle">{v:g}</text>'
        for v in (0, 0.25, 0.5, 0.75, 1.0)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="quality distribution">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#333"/>'
        f'{"".join(bars)}{ticks}<text x="{pad}" y="14" font-size="11">max {top} creatives per bin</text></svg>'
    )


def _svg_tag_bars(tags: list[str], rates: list[float], means: list[float], width: int = 640) -> str:
    row, label_w, pad = 22, 150, 8
    plot_w = width - label_w - 70
    height = row * len(tags) + 2 * pad
    parts = []
    for i, (t, r, m) in enumerate(zip(tags, rates, means, strict=True)):
        y = pad + i * row
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" font-size="12" text-anchor="end">{html.escape(t)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{plot_w * r:.1f}" height="{row - 8}" fill="#c2544a">'
            f"<title>{html.escape(t)}: flagged {r:.1%}, mean probability {m:.3f}</title></rect>"
            f'<line x1="{label_w + plot_w * m:.1f}" y1="{y + 1}" x2="{label_w + plot_w * m:.1f}" y2="{y + row - 3}" '
            f'stroke="#222" stroke-width="2"/>'
            f'<text x="{label_w + plot_w + 6}" y="{y + 15}" font-size="12">{r:.1%}</text>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="flag rate per tag">{"".join(parts)}</svg>'
    )


def _gallery(title: str, note: str, entries: list[tuple[float, tuple]], label: str) -> str:
    cards = []
    for score, (path, abspath, quality, flags) in entries:
        uri = _thumb(abspath)
        shown = flags.replace(",", ", ") if flags else "no flags"
        img = f'<img src="{uri}" alt="{html.escape(path)}">' if uri else '<div class="missing">unreadable now</div>'
        # NOTE: a quality gallery's score is the quality: say it once; a margin gallery shows both.
        scores = f"quality {quality:.3f}" + (f" · {label} {score:.3f}" if label != "quality" else "")
        cards.append(
            f'<figure>{img}<figcaption title="{html.escape(abspath)}">{html.escape(path)}<br>'
            f"{scores}<br><small>{html.escape(shown)}</small></figcaption></figure>"
        )
    head = f'<h3>{html.escape(title)}</h3><p class="note">{html.escape(note)}</p>'
    return f'{head}<div class="gallery">{"".join(cards)}</div>'


def _policy_note(policy: FlagPolicy, n_unreliable: int) -> str:
    if policy.rates_source == "none":
        return "This model's thresholds carry no precision target."
    return html.escape(
        f"Thresholds were set for a precision of {policy.target_precision:.2f} on validation, corrected for "
        f"annotator rates of {policy.miss_rate:.0%} missed and {policy.fp_rate:.0%} false ({policy.rates_source}); "
        f"{n_unreliable} unreliable tags are never flagged. True share: the validation labels' positive share "
        "corrected for those rates, to set beside the flag rate."
    )


def _tag_row(tag: str, group: str, policy: FlagPolicy, rate: float, flagged: int, mean: float) -> str:
    f = policy.tags.get(tag)
    share = f"{f.est_share:.1%}" if f is not None and f.est_share is not None else "-"
    if f is not None and not f.reliable:
        status, shown = f"unreliable: {f.reason}", "never"
    else:
        status, shown = "reliable", f"{rate:.1%}"
    thr = f"{f.threshold:.2f}" if f is not None else "-"
    return (
        f"<tr><td>{html.escape(tag)}</td><td>{html.escape(group)}</td><td>{thr}</td><td>{shown}</td><td>{share}</td>"
        f"<td>{flagged}</td><td>{mean:.3f}</td><td>{html.escape(status)}</td></tr>"
    )


def write_report(store: PartStore, scorer: Scorer, path: str | Path, run: dict[str, Any] | None = None) -> Path:
    """Write the HTML report of everything in ``store`` (one streaming pass); returns its path."""
    tags = list(scorer.tags)
    thr = np.array([scorer.thresholds.get(t, 0.5) for t in tags])
    policy = scorer.flag_policy
    reliable = np.array([t not in policy.unreliable for t in tags])
    keys_mode = store.meta.get("keys", "path+size+mtime")
    hist = np.zeros(BINS, dtype=np.int64)
    flagged = np.zeros(len(tags), dtype=np.int64)
    prob_sum = np.zeros(len(tags), dtype=np.float64)
    n_rows = n_scored = n_videos = 0
    low, high, unsure, sure = _TopK(GALLERY), _TopK(GALLERY), _TopK(GALLERY), _TopK(GALLERY)
    error_kinds: Counter[str] = Counter()
    error_rows: list[tuple[str, str]] = []
    cols = ["path", "quality", *tags, "flags", "n_frames", "error", "key"]
    for batch in store.iter_batches(columns=cols):
        d = batch.to_pydict()
        n_rows += batch.num_rows
        q = np.asarray(d["quality"], dtype=np.float64)
        p = np.stack([np.asarray(d[t], dtype=np.float64) for t in tags], axis=1)  # (B, T)
        ok = ~np.isnan(q)
        n_scored += int(ok.sum())
        n_videos += sum(1 for i in np.flatnonzero(ok) if d["n_frames"][i] > 1)
        hist += np.histogram(np.clip(q[ok], 0, 1), bins=BINS, range=(0, 1))[0]
        flagged += ((p[ok] >= thr) & reliable).sum(axis=0)
        prob_sum += p[ok].sum(axis=0)
        # distance of the nearest reliable tag to its threshold (unreliable tags are never flagged)
        margin = np.abs(p - thr)[:, reliable].min(axis=1) if reliable.any() else np.ones(len(q))
        for i in np.flatnonzero(ok):
            item = (d["path"][i], _abspath(d["key"][i], keys_mode), float(q[i]), d["flags"][i])
            low.push(-q[i], item)
            high.push(q[i], item)
            unsure.push(-margin[i], item)
            sure.push(margin[i], item)
        for i in np.flatnonzero(~ok):
            err = d["error"][i] or "no score"
            error_kinds[err.split(":")[0][:120]] += 1
            if len(error_rows) < MAX_ERROR_ROWS:
                error_rows.append((d["path"][i], err))
    rates = (flagged / max(n_scored, 1)).tolist()
    means = (prob_sum / max(n_scored, 1)).tolist()
    info = scorer.model_info
    runs = store.meta.get("runs", [])
    if not run or not run.get("creatives"):  # a rerun with nothing left: show the last run that scored
        run = next((r for r in reversed(runs) if r.get("creatives")), run or {})
    n_err = n_rows - n_scored
    all_n = sum(r.get("creatives", 0) for r in runs)
    all_s = sum(r.get("seconds", 0) for r in runs)
    groups = {t.name: t.group for t in scorer.taxonomy.tags}
    tag_rows = "".join(
        _tag_row(t, groups.get(t, ""), policy, rates[i], int(flagged[i]), means[i]) for i, t in enumerate(tags)
    )
    n_unreliable = len([t for t in tags if t in policy.unreliable])
    err_kind_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{c}</td></tr>" for k, c in error_kinds.most_common(20))
    err_rows = "".join(f"<tr><td>{html.escape(p)}</td><td>{html.escape(e)}</td></tr>" for p, e in error_rows)
    run_rows = "".join(
        f"<tr><td>{html.escape(str(r.get('finished', '')))}</td><td>{r.get('engine', '')}</td>"
        f"<td>{r.get('workers', '')}</td><td>{r.get('creatives', 0)}</td><td>{r.get('errors', 0)}</td>"
        f"<td>{r.get('seconds', 0):.1f}</td><td>{r.get('creatives_per_s', 0):.1f}</td></tr>"
        for r in runs
    )
    galleries = (
        _gallery(
            "Lowest quality", "The creatives the model scores worst.", [(-s, it) for s, it in low.best()], "quality"
        )
        if n_scored
        else ""
    )
    if n_scored:
        galleries += _gallery("Highest quality", "The creatives the model scores best.", high.best(), "quality")
        galleries += _gallery(
            "Least confident",
            "A tag probability closest to its threshold: the first ones to review by eye.",
            [(-s, it) for s, it in unsure.best()],
            "margin",
        )
        galleries += _gallery("Most confident", "Every tag far from its threshold.", sure.best(), "margin")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>creative-qa batch report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 13px; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; width: {THUMB + 12}px; font-size: 11px; overflow-wrap: anywhere; }}
figure img {{ max-width: {THUMB}px; max-height: {THUMB}px; display: block; border: 1px solid #ccc; }}
.missing {{ width: {THUMB}px; height: 60px; background: #eee; }}
.note {{ color: #666; font-size: 13px; }}
</style></head><body>
<h1>creative-qa batch report</h1>
<table>
<tr><th>model</th><td>{html.escape(info["name"])} version {html.escape(info["version"])}</td></tr>
<tr><th>taxonomy</th><td>version {html.escape(info["taxonomy_version"])}, {len(tags)} tags</td></tr>
<tr><th>rows</th><td>{n_rows} ({n_scored} scored, of which {n_videos} videos; {n_err} errors)</td></tr>
<tr><th>last run</th><td>{run.get("creatives", 0)} creatives in {run.get("seconds", 0):.1f} s:
 <b>{run.get("creatives_per_s", 0):.1f} creatives/s</b> ({html.escape(str(run.get("engine", "")))},
 {run.get("workers", "")} workers)</td></tr>
<tr><th>all runs</th><td>{len(runs)} runs, {all_n} creatives in {all_s:.1f} s of scoring:
 {all_n / all_s if all_s else 0:.1f} creatives/s</td></tr>
<tr><th>output</th><td>{html.escape(str(store.output))}</td></tr>
</table>
<h2>Quality distribution</h2>
{_svg_histogram(hist)}
<h2>Flag rate per tag</h2>
<p class="note">Bar: share of scored creatives flagged (probability at or above the tag's threshold);
black tick: mean probability. {_policy_note(policy, n_unreliable)}</p>
{_svg_tag_bars(tags, rates, means)}
<table><tr><th>tag</th><th>group</th><th>threshold</th><th>flag rate</th><th>true share (model's estimate)</th>
<th>flagged</th><th>mean probability</th><th>flags</th></tr>
{tag_rows}</table>
<h2>Creatives</h2>
{galleries}
<h2>Errors ({n_err})</h2>
<table><tr><th>error</th><th>creatives</th></tr>{err_kind_rows}</table>
<table><tr><th>path</th><th>error (first {MAX_ERROR_ROWS})</th></tr>{err_rows}</table>
<h2>Runs</h2>
<table><tr><th>finished</th><th>engine</th><th>workers</th><th>creatives</th><th>errors</th><th>seconds</th>
<th>creatives/s</th></tr>{run_rows}</table>
</body></html>
"""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    log.info("report -> %s", out)
    return out


__all__ = ["write_report"]
