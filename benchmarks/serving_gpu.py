"""GPU scoring: onnxruntime's TensorRT and CUDA providers (FP16 where supported) at the batch buckets.

    python benchmarks/serving_gpu.py                       # default recipe's model (random weights)
    python benchmarks/serving_gpu.py --model model.onnx    # a trained model
    python benchmarks/serving_gpu.py --quick               # smoke size (also runs on a CPU-only machine)

One prepared script for a machine with a GPU (the project's own machines have none):

1. model level: for each provider configuration (TensorRT FP16, CUDA FP32, CUDA FP16 when
   ``onnxconverter-common`` can convert the graph, CPU) and each batch bucket the server
   pads to, the throughput (creatives/s) and p50/p99 latency of one ``session.run``;
2. end to end: ``benchmarks/api_load.py``'s table (API with batching vs in-process Scorer,
   concurrency 1/8/32) once per GPU provider, through ``CREATIVE_QA_PROVIDERS``;
3. the CPU ceiling: ``benchmarks/preprocess.py`` on JPEGs of 512, 1,080 and 2,160 px (decoding and
   the views, one thread, both paths), times the machine's cores, next to the model's best rate: once
   the model runs on the GPU, the creatives/s the CPUs can prepare is where scoring stops scaling.

A configuration whose provider this onnxruntime build lacks is listed as skipped, with why.
Writes JSON (default: benchmarks/results/serving_gpu.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from creative_qa.scorer import Scorer  # noqa: E402

BUCKETS = (1, 2, 4, 8, 16, 32)


def fp16_copy(onnx_path: Path, out: Path) -> Path:
    """The graph with FP16 weights and compute, uint8 input and FP32 outputs kept."""
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    onnx.save(model, str(out))
    return out


def configurations(onnx_path: Path, views: int, side: int, cache: Path) -> list[tuple[str, Path | None, Any, str]]:
    """(name, model file, providers, why skipped or '')."""
    available = ort.get_available_providers()
    shape = f"{views}x{side}x{side}x3"
    trt = (
        "TensorrtExecutionProvider",
        {
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            # NOTE: one optimisation profile covering every bucket, tuned for the largest.
            "trt_profile_min_shapes": f"images:1x{shape}",
            "trt_profile_opt_shapes": f"images:{max(BUCKETS)}x{shape}",
            "trt_profile_max_shapes": f"images:{max(BUCKETS)}x{shape}",
        },
    )
    cuda = ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "EXHAUSTIVE"})
    out: list[tuple[str, Path | None, Any, str]] = []
    missing = "" if "TensorrtExecutionProvider" in available else f"not in this onnxruntime build ({available})"
    out.append(("TensorRT FP16", onnx_path, [trt, cuda, "CPUExecutionProvider"], missing))
    missing = "" if "CUDAExecutionProvider" in available else f"not in this onnxruntime build ({available})"
    out.append(("CUDA FP32", onnx_path, [cuda, "CPUExecutionProvider"], missing))
    fp16, why = None, missing
    if not missing:
        try:
            fp16 = fp16_copy(onnx_path, cache / "model_fp16.onnx")
        except Exception as e:  # noqa: BLE001  (no converter, or an op it cannot convert)
            why = f"no FP16 graph: {type(e).__name__}: {e}"
    out.append(("CUDA FP16", fp16, [cuda, "CPUExecutionProvider"], why))
    out.append(("CPU FP32", onnx_path, ["CPUExecutionProvider"], ""))
    return out


def time_runs(sess: ort.InferenceSession, x: np.ndarray, iters: int) -> list[float]:
    for _ in range(3):
        sess.run(["quality", "tags"], {"images": x})
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(["quality", "tags"], {"images": x})
        times.append(time.perf_counter() - t)
    return times


def model_level(onnx_path: Path, scorer: Scorer, iters: int, buckets: tuple[int, ...]) -> list[dict[str, Any]]:
    spec = scorer.spec
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, providers, skipped in configurations(onnx_path, spec.views, spec.input_size, Path(tmp)):
            if skipped:
                rows.append({"config": name, "skipped": skipped})
                print(f"{name:<14} skipped: {skipped}")
                continue
            sess = ort.InferenceSession(str(path), providers=providers)
            used = sess.get_providers()[0]
            for b in buckets:
                x = np.random.default_rng(0).integers(0, 256, (b, spec.views, spec.input_size, spec.input_size, 3))
                times = sorted(time_runs(sess, x.astype(np.uint8), iters))
                row = {
                    "config": name,
                    "provider": used,
                    "batch": b,
                    "creatives_per_s": b / statistics.median(times),
                    "p50_ms": 1000 * statistics.median(times),
                    "p99_ms": 1000 * times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))],
                }
                rows.append(row)
                print(
                    f"{name:<14} {used:<28} batch {b:>3} {row['creatives_per_s']:>9.1f}/s "
                    f"p50 {row['p50_ms']:>7.2f} ms p99 {row['p99_ms']:>7.2f} ms"
                )
    return rows


def end_to_end(model: str, quick: bool, out_dir: Path) -> dict[str, Any]:
    """benchmarks/api_load.py (API with batching vs in-process) once per GPU provider."""
    results: dict[str, Any] = {}
    available = ort.get_available_providers()
    for provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
        if provider not in available:
            results[provider] = {"skipped": "not in this onnxruntime build"}
            continue
        out = out_dir / f"serving_{provider}.json"
        env = {**os.environ, "CREATIVE_QA_PROVIDERS": f"{provider},CPUExecutionProvider"}
        cmd = [sys.executable, "benchmarks/api_load.py", "--model", model, "--modes", "api-batching,in-process"]
        cmd += ["--out", str(out)] + (["--quick"] if quick else [])
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
        print(r.stdout[-3000:])
        results[provider] = json.loads(out.read_text()) if r.returncode == 0 else {"error": r.stderr[-2000:]}
    return results


def cpu_ceiling(model: Path, quick: bool, out_dir: Path, model_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``benchmarks/preprocess.py`` on JPEGs with ``model``'s views; each size's creatives/s on every core
    beside the model's best rate."""
    from creative_qa.machine import cpu_count

    out = out_dir / "preprocess.json"
    cmd = [sys.executable, "benchmarks/preprocess.py", "--model", str(model), "--formats", "jpeg", "--out", str(out)]
    cmd += ["--quick"] if quick else ["--sizes", "512,1080,2160", "--repeat", "10"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        print(f"preprocess benchmark failed: {r.stderr[-2000:]}")
        return []
    best = max((row["creatives_per_s"] for row in model_rows if "creatives_per_s" in row), default=float("nan"))
    cores = cpu_count()
    rows = []
    for row in json.loads(out.read_text())["rows"]:
        ceiling = cores * 1e3 / row["total_ms_reduced"]
        rows.append({"short_side": row["short_side"], "cpu_ms_full": row["total_ms_full"],
                     "cpu_ms_reduced": row["total_ms_reduced"], "cores": cores,
                     "cpu_ceiling_per_s": ceiling, "model_best_per_s": best})  # fmt: skip
        print(
            f"JPEG {row['short_side']:>5} px: {row['total_ms_full']:.2f} -> {row['total_ms_reduced']:.2f} CPU ms; "
            f"{cores} cores prepare {ceiling:,.0f}/s, the model runs {best:,.0f}/s"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="ONNX path (default: export the recipe's model)")
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-end-to-end", action="store_true", help="model level only")
    ap.add_argument("--out", default="benchmarks/results/serving_gpu.json")
    a = ap.parse_args()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.model:
        onnx_path = Path(a.model)
    else:
        import importlib.util

        spec = importlib.util.spec_from_file_location("serving_bench", Path(__file__).with_name("api_load.py"))
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        onnx_path = bench.export_default(out.parent, a.recipe)
    scorer = Scorer(onnx_path)
    buckets = (1, 8) if a.quick else BUCKETS
    print(f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}")
    rows = model_level(onnx_path, scorer, 5 if a.quick else a.iters, buckets)
    e2e = {} if a.no_end_to_end else end_to_end(str(onnx_path), a.quick, out.parent)
    ceiling = cpu_ceiling(onnx_path, a.quick, out.parent, rows)
    payload = {"model": str(onnx_path), "rows": rows, "end_to_end": e2e, "cpu_ceiling": ceiling}
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
