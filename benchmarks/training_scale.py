"""Training at scale: resident memory and throughput, in-RAM views vs the on-disk view cache; DDP overhead.

    python benchmarks/training_scale.py            # 2,000 and 20,000 creatives (~15 min on 2 busy cores)
    python benchmarks/training_scale.py --quick    # smoke size (60 and 240 creatives)
    python benchmarks/training_scale.py --gpu      # on a CUDA machine: 224 px, bf16 / channels-last on and off

What it measures, each arm in a fresh process:

* ``ram`` / ``disk`` x N creatives: peak resident memory (``ru_maxrss``) of a process that
  loads the labeled set (decoding it in RAM, or opening the view cache), reads one whole
  epoch of batches (every creative) and trains ``--train-steps`` steps; the epoch's read
  rate and the training rate (creatives/s).
* cache build: wall time to decode + preprocess the smallest size into a fresh cache with
  1 worker process and with N (one per CPU).
* DDP: ``torchrun --nproc-per-node 2`` (gloo, 1 thread each) vs one process (2 threads) on
  the same global batch and steps: wall time of the training epoch and the validation mAP
  each reached (same data order, so they should agree closely).

The synthetic data are generated once under ``<home>/bench/`` and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import default_bench_dir, print_table, synth_once, write_json  # noqa: E402

from creative_qa.machine import cpu_count  # noqa: E402


def _manifests(bench: Path, sizes: list[int], quick: bool) -> dict[int, Path]:
    import pandas as pd

    from creative_qa.synth import SynthConfig

    cfg = SynthConfig(size=128 if quick else 256)
    paths = synth_once(bench, n_labeled=max(sizes), n_unlabeled=0, n_test=0, seed=0, cfg=cfg, progress=not quick)
    df = pd.read_csv(paths["train_labeled"])
    out = {}
    for n in sizes:
        p = bench / f"subset-{n}.csv"
        df.iloc[:n].to_csv(p, index=False)
        out[n] = p
    return out


def _overrides(quick: bool) -> list[str]:
    return ["optim.batch_size=32", "threads=2", "device=cpu"] + (["model.crops=2"] if quick else [])


# --- one arm, in its own process ------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does not inherit the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(manifest: str, mode: str, cache_root: str, train_steps: int, quick: bool) -> dict[str, Any]:
    import numpy as np
    import torch

    from creative_qa.taxonomy import load_taxonomy
    from training.config import load_config
    from training.data import epoch_batches, load_manifest_dataset
    from training.loop import _loader, _to, spec_of
    from training.methods import get_method
    from training.model import build_model

    cfg = load_config("default", _overrides(quick))
    torch.set_num_threads(2)
    tags = load_taxonomy().tag_names
    t0 = time.time()
    root = Path(cache_root) if mode == "disk" else None
    ds, _ = load_manifest_dataset(manifest, tags, spec_of(cfg), pool=cfg.data.crop_pool, cache=root, workers=0)
    load_s = time.time() - t0
    bs = cfg.optim.batch_size
    batches = epoch_batches(len(ds), bs, None, 0, 0)

    t0 = time.time()
    seen = 0
    for batch in _loader(ds, batches, 0, 0):  # one whole epoch of reads: every creative once
        seen += len(batch["index"])
    read_s = time.time() - t0

    torch.manual_seed(0)
    model = build_model(cfg.model, len(tags))
    method = get_method("supervised")(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    steps = min(train_steps, len(batches))
    t0 = time.time()
    for batch in _loader(ds, batches[:steps], 0, 0):
        loss, _ = method.train_step(_to(batch, torch.device("cpu")), None, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.time() - t0
    return {
        "n": len(ds),
        "mode": mode,
        "peak_rss_mb": peak_rss_mb(),
        "load_s": load_s,
        "read_creatives_per_s": seen / read_s,
        "train_creatives_per_s": steps * bs / max(train_s, 1e-9),
        "train_steps": steps,
        "views_bytes_per_creative": int(np.prod(ds.views.shape[1:]) + np.prod(ds.pool.shape[1:])),
    }


def _run_child(manifest: Path, mode: str, cache_root: Path, a: argparse.Namespace) -> dict[str, Any]:
    args = [sys.executable, __file__, "--child", str(manifest), mode, str(cache_root), str(a.train_steps)]
    r = subprocess.run([*args, *(["--quick"] if a.quick else [])], capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"arm {mode} {manifest.name} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- cache build ------------------------------------------------------------------------


def cache_build(manifest: Path, workers: int, quick: bool) -> float:
    from creative_qa.manifest import read_manifest
    from training.config import load_config
    from training.data import build_view_cache
    from training.loop import spec_of

    cfg = load_config("default", _overrides(quick))
    paths = read_manifest(str(manifest))["abspath"].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        build_view_cache(paths, spec_of(cfg), cfg.data.crop_pool, Path(tmp), workers, "bench")
        return time.time() - t0


def prebuild(manifest: Path, root: Path, quick: bool) -> None:
    from creative_qa.taxonomy import load_taxonomy
    from training.config import load_config
    from training.data import load_manifest_dataset
    from training.loop import spec_of

    cfg = load_config("default", _overrides(quick))
    tags = load_taxonomy().tag_names
    load_manifest_dataset(str(manifest), tags, spec_of(cfg), pool=cfg.data.crop_pool, cache=root)


# --- DDP vs one process -------------------------------------------------------------------


def ddp_vs_one(manifest: Path, steps: int, quick: bool, home: Path) -> list[dict[str, Any]]:
    rows = []
    base = [
        "-m",
        "creative_qa.cli",
        "train",
        *[o for o in _overrides(quick) if not o.startswith(("optim.batch_size", "threads"))],
        f"data.labeled={manifest}",
        f"optim.steps_per_epoch={steps}",
        "optim.epochs=1",
        "optim.checkpoint_every=0",
        "method.name=supervised",
        "experiment=bench-training-scale",
    ]
    env = {**os.environ, "CREATIVE_QA_HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    arms = {
        "one process, batch 32": [sys.executable, *base, "optim.batch_size=32", "threads=2"],
        "DDP 2 x gloo, batch 2 x 16": [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            *base,
            "optim.batch_size=16",
            "threads=1",
        ],
    }
    for name, cmd in arms.items():
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        if r.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{r.stderr[-3000:]}")
        out = json.loads(r.stdout[r.stdout.index("{") :])
        m = out["metrics"]
        rows.append(
            {
                "arm": name,
                "steps": steps,
                "epoch_s": m.get("epoch_seconds"),
                "process_s": time.time() - t0,
                "val_mAP": m.get("val_mAP"),
                "val_quality_spearman": m.get("val_quality_spearman"),
            }
        )
    return rows


# --- GPU: bf16 autocast and channels-last --------------------------------------------------


def gpu_sweep(steps: int) -> list[dict[str, Any]]:
    """Training throughput at 224 px on CUDA with bf16 autocast and channels-last on and off."""
    import torch

    from training.config import load_config
    from training.methods import get_method
    from training.model import build_model

    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    dev = torch.device("cuda")
    rows = []
    for backbone in ("resnet50", "convnext_tiny"):
        for amp in (False, True):
            for cl in (False, True):
                cfg = load_config("default", [f"model.backbone={backbone}", "model.input_size=224", "model.crops=3"])
                model = build_model(cfg.model, 20).to(dev)
                if cl:
                    model = model.to(memory_format=torch.channels_last)
                method = get_method("supervised")(model)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
                b = 64
                x = torch.randint(0, 256, (b, 4, 224, 224, 3), dtype=torch.uint8, device=dev)
                batch = {
                    "images": x,
                    "crop_pool": x[:, :0],
                    "labels": torch.randint(0, 2, (b, 20), device=dev).float(),
                    "quality": torch.rand(b, device=dev),
                    "index": torch.arange(b, device=dev),
                }
                for i in range(steps + 3):
                    if i == 3:
                        torch.cuda.synchronize()
                        t0 = time.time()
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                        loss, _ = method.train_step(batch, None, i)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                torch.cuda.synchronize()
                rows.append(
                    {
                        "backbone": backbone,
                        "bf16": amp,
                        "channels_last": cl,
                        "creatives_per_s": steps * b / (time.time() - t0),
                    }
                )
                del model, method, opt
                torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--ddp-steps", type=int, default=40)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/training_scale.json")
    ap.add_argument("--child", nargs=4, metavar=("MANIFEST", "MODE", "CACHE", "STEPS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        manifest, mode, cache, steps = a.child
        print(json.dumps(child(manifest, mode, cache, int(steps), a.quick)))
        return
    if a.gpu:
        rows = gpu_sweep(20 if a.quick else 50)
        print_table(rows, ["backbone", "bf16", "channels_last", "creatives_per_s"])
        write_json(a.out, {"gpu": rows})
        return
    if a.quick:
        a.sizes, a.train_steps, a.ddp_steps = "60,240", 3, 3
    sizes = [int(s) for s in a.sizes.split(",")]
    bench = default_bench_dir("training-scale" + ("-quick" if a.quick else ""))
    t0 = time.time()
    manifests = _manifests(bench, sizes, a.quick)
    synth_s = time.time() - t0
    cache_root = bench / "cache"

    n_cpu = cpu_count()
    build = [
        {"n": sizes[0], "workers": w, "build_s": cache_build(manifests[sizes[0]], w, a.quick)}
        for w in sorted({1, n_cpu})
    ]
    arms = []
    for n in sizes:
        for mode in ("ram", "disk"):
            if mode == "disk":  # build (or reuse) this size's cache outside the measured process
                prebuild(manifests[n], cache_root, a.quick)
            arms.append(_run_child(manifests[n], mode, cache_root, a))
    ratio = {
        mode: next(r["peak_rss_mb"] for r in arms if r["n"] == sizes[-1] and r["mode"] == mode)
        / next(r["peak_rss_mb"] for r in arms if r["n"] == sizes[0] and r["mode"] == mode)
        for mode in ("ram", "disk")
    }
    ddp = ddp_vs_one(manifests[sizes[0]], a.ddp_steps, a.quick, bench / "home")

    print(f"\nviews per creative: {arms[0]['views_bytes_per_creative'] / 1024:.0f} KiB; synth {synth_s:.0f}s")
    print_table(
        arms, ["n", "mode", "peak_rss_mb", "load_s", "read_creatives_per_s", "train_creatives_per_s", "train_steps"]
    )
    print(
        f"peak RSS {sizes[-1]} / {sizes[0]} creatives: in RAM {ratio['ram']:.2f}x, on-disk cache {ratio['disk']:.2f}x"
    )
    print()
    print_table(build, ["n", "workers", "build_s"])
    print()
    print_table(ddp, ["arm", "steps", "epoch_s", "process_s", "val_mAP", "val_quality_spearman"])
    payload = {
        "sizes": sizes,
        "arms": arms,
        "rss_ratio": ratio,
        "cache_build": build,
        "ddp": ddp,
        "cpus": n_cpu,
        "load_avg_at_end": os.getloadavg(),
    }
    print(f"wrote {write_json(a.out, payload)}")


if __name__ == "__main__":
    main()
