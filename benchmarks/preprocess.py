"""CPU per creative for decoding and preprocessing alone (no model): by format and size, two paths side by side.

Once the model runs on a GPU, or is as small as the demo's, decoding and preprocessing are the whole
cost of scoring a creative. This measures them as the scorer runs them (``Scorer.decode`` then
``preprocess`` per frame, one thread), on creatives made from real photographs (the real-photo
benchmark's sources, ``make bench-data``; with ``--quick`` its fallback pictures) at a short side of
256, 512, 1,080 and 2,160 px (16:9), encoded as JPEG (quality 90, 4:2:0), PNG, WebP (quality 90) and
an H.264 video (one frame sampled). Two paths, each creative through both in the same run: the views
from the full-size creative (``reduce=0``: every model exported before the field) and from the
creative box-reduced to twice what the views sample (``reduce=1``, the default). Reports CPU ms per
creative for decoding, for each path's views, in all, the ratio, and the creatives per second one core
can prepare on the new path.

    python benchmarks/preprocess.py                      # the default views, every format and size
    python benchmarks/preprocess.py --model champion.onnx  # the views of a model (its preprocessing spec)
    python benchmarks/preprocess.py --batch 400          # ... and batch-score 400 1,080 px JPEGs on each path
    python benchmarks/preprocess.py --quick              # CI smoke: two sizes, few repeats

Writes ``benchmarks/results/preprocess.json``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, write_json  # noqa: E402

SIZES = (256, 512, 1080, 2160)
FORMATS = ("jpeg", "png", "webp", "video")
ASPECT = 16 / 9


def _photo(quick: bool) -> np.ndarray:
    """The largest of the real-photo benchmark's photographs, RGB uint8 at its own resolution."""
    import realphoto
    from PIL import Image

    try:
        photos = realphoto.find_photos(allow_fallback=quick)
    except realphoto.MissingAssets as e:
        raise SystemExit(f"preprocess benchmark: {e}") from e
    sizes = {p.path: Image.open(p.path).size for p in photos}
    largest = max(sizes, key=lambda p: min(sizes[p]))
    return np.asarray(Image.open(largest).convert("RGB"))


def creative(photo: np.ndarray, short: int) -> np.ndarray:
    """``photo`` cropped to 16:9 and resized to a short side of ``short`` px (landscape)."""
    from PIL import Image

    h, w = photo.shape[:2]
    cw, ch = (w, round(w / ASPECT)) if w / h <= ASPECT else (round(h * ASPECT), h)
    cw, ch = min(cw, w), min(ch, h)
    top, left = (h - ch) // 2, (w - cw) // 2
    img = Image.fromarray(photo[top : top + ch, left : left + cw])
    return np.asarray(img.resize((round(short * ASPECT), short), Image.Resampling.LANCZOS))


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    """The creative's file in ``fmt``."""
    from PIL import Image

    if fmt == "video":
        return _video(pixels)
    buf = io.BytesIO()
    img = Image.fromarray(pixels)
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=90, subsampling=2)
    elif fmt == "png":
        img.save(buf, "PNG")
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=90)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return buf.getvalue()


def _video(pixels: np.ndarray, frames: int = 8, fps: int = 8) -> bytes:
    """An H.264 MP4 of ``frames`` frames, the creative panning by a few pixels per frame."""
    import av

    h, w = pixels.shape[0] // 2 * 2, pixels.shape[1] // 2 * 2
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            frame = np.roll(pixels[:h, :w], 4 * i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def measure(data: bytes, name: str, spec, max_frames: int, repeat: int) -> dict[str, float]:
    """Median CPU ms of decoding and of the views over ``repeat`` runs (after one warm-up)."""
    from creative_qa.media import DecodeLimits, decode_bytes
    from creative_qa.preprocess import preprocess

    limits = DecodeLimits.from_env()
    decode_ms, views_ms = [], []
    for i in range(repeat + 1):
        t0 = time.process_time()
        frames = decode_bytes(data, name, max_frames, limits, spec.decode_min_side)
        t1 = time.process_time()
        for f in frames:
            preprocess(f.source, spec)
        t2 = time.process_time()
        if i:  # the first run warms caches and imports
            decode_ms.append(1e3 * (t1 - t0))
            views_ms.append(1e3 * (t2 - t1))
    return {"decode_ms": float(np.median(decode_ms)), "views_ms": float(np.median(views_ms))}


def compare(data: bytes, name: str, spec, repeat: int) -> dict[str, float]:
    """Both paths on one creative, interleaved so that both see the same machine."""
    import dataclasses

    old, new = dataclasses.replace(spec, reduce=0), dataclasses.replace(spec, reduce=1)
    a, b = measure(data, name, old, 1, repeat), measure(data, name, new, 1, repeat)
    total_old, total_new = a["decode_ms"] + a["views_ms"], b["decode_ms"] + b["views_ms"]
    return {
        "decode_ms": b["decode_ms"],
        "views_ms_full": a["views_ms"],
        "views_ms_reduced": b["views_ms"],
        "total_ms_full": total_old,
        "total_ms_reduced": total_new,
        "speedup": total_old / total_new,
        "per_core_per_s": 1e3 / total_new,
    }


def batch_rates(photo: np.ndarray, n: int, short: int, workers: int | None) -> list[dict[str, Any]]:
    """``batch_score`` on ``n`` JPEG creatives of ``short`` px with a model of each path (random weights, the
    default architecture), alternating twice: creatives per second of each (its best run)."""
    import tempfile

    from common import export_random_model
    from PIL import Image

    from creative_qa.batch import batch_score
    from creative_qa.machine import cpu_count

    workers = workers or cpu_count()
    best: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="cqa-preprocess-") as d:
        tmp = Path(d)
        folder = tmp / "in"
        folder.mkdir()
        big = creative(photo, short)
        for i in range(n):  # distinct creatives: the photo shifted and mirrored
            px = np.roll(big, 7 * i, axis=1)
            Image.fromarray(px[:, ::-1] if i % 2 else px).save(folder / f"{i:05d}.jpg", quality=90)
        models = {
            r: export_random_model("default", tmp / f"reduce{r}.onnx", "1", f"reduce{r}", (f"model.reduce={r}",))
            for r in (0, 1)
        }
        for round_ in range(2):
            for r, model in models.items():
                out = tmp / f"scores-{r}-{round_}.parquet"
                s = batch_score(folder, out, model, workers=workers, report=False, progress=False)
                best[r] = max(best.get(r, 0.0), s.creatives_per_s)
                print(f"batch-score reduce={r}: {s.creatives_per_s:.1f} creatives/s", file=sys.stderr)
    return [
        {"path": "full size (reduce=0)", "creatives_per_s": best[0], "ratio": 1.0},
        {"path": "reduced (reduce=1)", "creatives_per_s": best[1], "ratio": best[1] / best[0]},
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="an ONNX model: measure its views (default: the default recipe's)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="short sides, px")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--batch", type=int, default=0, help="also batch-score this many JPEGs on each path")
    ap.add_argument("--batch-side", type=int, default=1080, help="their short side, px")
    ap.add_argument("--workers", type=int, default=None, help="batch-score's decode workers (default: the cores)")
    ap.add_argument("--quick", action="store_true", help="two sizes, 3 repeats, the builder's fallback pictures")
    ap.add_argument("--out", default="benchmarks/results/preprocess.json")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from creative_qa.preprocess import PreprocessSpec

    if a.model:
        from creative_qa.scorer import Scorer

        spec = Scorer(a.model).spec
    else:
        from training.config import load_config
        from training.loop import spec_of

        spec = spec_of(load_config("default"))
    assert isinstance(spec, PreprocessSpec)
    sizes = [256, 1080] if a.quick else [int(s) for s in a.sizes.split(",")]
    repeat = 3 if a.quick else a.repeat
    photo = _photo(a.quick)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        pixels = creative(photo, size)
        for fmt in a.formats.split(","):
            data = encode(pixels, fmt)
            name = f"creative.{'mp4' if fmt == 'video' else fmt}"
            row = {"format": fmt, "short_side": size, "kb": round(len(data) / 1024, 1)}
            row |= compare(data, name, spec, repeat)
            rows.append(row)
            ms = f"{row['total_ms_full']:.2f} -> {row['total_ms_reduced']:.2f} ms"
            print(f"{fmt:5s} {size:5d} px: {ms}", file=sys.stderr)
    cols = ["format", "short_side", "kb", "decode_ms", "views_ms_full", "views_ms_reduced", "total_ms_full",
            "total_ms_reduced", "speedup", "per_core_per_s"]  # fmt: skip
    print(f"CPU ms per creative, one thread, median of {repeat} (views: {spec.to_dict()}, reduce 0 and 1)")
    print_table(rows, cols)
    batch: list[dict[str, Any]] = []
    if a.batch:
        batch = batch_rates(photo, a.batch, a.batch_side, a.workers)
        print(f"batch-score, {a.batch} JPEG creatives of {a.batch_side} px, the default model (random weights)")
        print_table(batch, ["path", "creatives_per_s", "ratio"])
    write_json(a.out, {"spec": spec.to_dict(), "repeat": repeat, "rows": rows, "batch": batch})


if __name__ == "__main__":
    main()
