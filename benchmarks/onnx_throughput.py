"""ONNX Runtime vs torch inference throughput: same model, same batch, one process.

    python benchmarks/onnx_throughput.py                 # default recipe's model and input size
    python benchmarks/onnx_throughput.py --checkpoint ~/.creative-qa/runs/<run>/last.pt
    python benchmarks/onnx_throughput.py --quick         # CI smoke size

Prints a table and writes JSON (default: benchmarks/results/onnx_throughput.json).
Weights do not change the speed, so without a checkpoint a randomly initialised model is used.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from creative_qa.paths import home
from creative_qa.preprocess import PreprocessSpec
from creative_qa.scorer import OnnxModel, choose_providers
from creative_qa.taxonomy import load_taxonomy
from training.checkpoint import Checkpoint
from training.config import load_config
from training.export import export_onnx
from training.loop import load_checkpoint, spec_of
from training.model import ProbabilityModel, build_model, config_of, model_from_checkpoint


def _time(fn, x, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn(x)
    t = time.perf_counter()
    for _ in range(iters):
        fn(x)
    return (time.perf_counter() - t) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a CI smoke run")
    ap.add_argument("--out", default="benchmarks/results/onnx_throughput.json")
    a = ap.parse_args()
    if a.quick:
        a.batch, a.iters = 4, 2

    if a.checkpoint:
        ckpt = load_checkpoint(a.checkpoint)
    else:
        cfg = load_config(a.recipe)
        tax = load_taxonomy()
        torch.manual_seed(0)
        model = build_model(cfg.model, len(tax))
        ckpt = Checkpoint.for_model(model, cfg, tax, spec_of(cfg), run_id="bench")
    spec = PreprocessSpec.from_dict(ckpt.preprocess)
    work = home() / "bench" / "onnx_throughput"  # NOTE: one file, replaced by each run (not a temp dir per run)
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(ckpt, work / "bench.onnx", version="bench", name="bench")

    model, cfg = model_from_checkpoint(ckpt), config_of(ckpt)
    wrapped = ProbabilityModel(model).eval()
    x = np.random.default_rng(0).integers(
        0, 256, (a.batch, spec.views, spec.input_size, spec.input_size, 3), dtype=np.uint8
    )
    xt = torch.from_numpy(x)
    threads = torch.get_num_threads()

    def run_torch(inp):
        with torch.inference_mode():
            return wrapped(inp)

    rows = []
    t_torch = _time(run_torch, xt, a.iters, 2)
    rows.append({"engine": "torch (eager, CPU)", "seconds_per_batch": t_torch, "creatives_per_s": a.batch / t_torch})
    sess = OnnxModel(onnx_path, providers=["CPUExecutionProvider"])
    t_onnx = _time(sess.run, x, a.iters, 2)
    rows.append({"engine": "onnxruntime CPU", "seconds_per_batch": t_onnx, "creatives_per_s": a.batch / t_onnx})
    if "CUDAExecutionProvider" in choose_providers():
        gpu = OnnxModel(onnx_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        t_gpu = _time(gpu.run, x, a.iters, 3)
        rows.append({"engine": "onnxruntime CUDA", "seconds_per_batch": t_gpu, "creatives_per_s": a.batch / t_gpu})

    info = {
        "backbone": cfg.model.backbone,
        "views": spec.views,
        "input_size": spec.input_size,
        "batch": a.batch,
        "iters": a.iters,
        "torch_threads": threads,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(
        f"model {cfg.model.backbone}, {spec.views} views of {spec.input_size}px, batch {a.batch}, "
        f"{threads} torch threads"
    )
    print(f"{'engine':<22} {'s/batch':>9} {'creatives/s':>12}")
    for r in rows:
        print(f"{r['engine']:<22} {r['seconds_per_batch']:>9.4f} {r['creatives_per_s']:>12.1f}")
    print(f"onnxruntime / torch speed-up: {t_torch / t_onnx:.2f}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"info": info, "rows": rows, "speedup": t_torch / t_onnx}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
