"""The real-photo benchmark's builder: independent of the synthetic generator, labels visible in the pixels.

The photos, fonts and libraries come from ``make bench-data``; without them these tests fail with a message
that names it (never a skip). The pixel test builds with ``allow_fallback`` so it also runs where only the
photos bundled in Python wheels are present; ``test_bench_assets_installed`` holds the full set to account.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from creative_qa.manifest import label_matrix, read_manifest
from creative_qa.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
CHECKED = ("realphoto.py", "rules.py")
FORBIDDEN = ("creative_qa.synth", "training.degrade")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def _imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (``from a import b`` counts as ``a`` and ``a.b``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            out |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return out


def _bench_module(name: str) -> Path | None:
    """The file in benchmarks/ an import names (``common``, ``benchmarks.common``), if any."""
    top = name.removeprefix("benchmarks.").split(".")[0]
    p = BENCH / f"{top}.py"
    return p if p.is_file() else None


def test_builder_and_rules_never_import_the_generator_or_training_degradations():
    seen: set[Path] = set()
    todo = [BENCH / f for f in CHECKED]
    bad = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for mod in _imports(path):
            if any(mod == f or mod.startswith(f"{f}.") for f in FORBIDDEN):
                bad.append(f"{path.name} imports {mod}")
            if (dep := _bench_module(mod)) is not None:
                todo.append(dep)
    assert not bad, "; ".join(bad)
    # and at run time: importing them pulls in neither (through creative_qa's own imports, say)
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import realphoto, rules; "
        f"bad = [m for m in sys.modules if m.startswith({FORBIDDEN!r})]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]


def test_bench_assets_installed():
    """The full photo and font set is there (CI runs `make bench-data`); the message names the fix."""
    rp = _load("realphoto")
    rp._require_libs()
    photos = rp.find_photos()
    fonts = rp.find_fonts()
    assert len(photos) >= rp.MIN_PHOTOS and len(fonts) >= 5
    assert len({p.source.key for p in photos}) == len(photos)
    assert all(p.source.licence for p in photos)


def _luma(x: np.ndarray) -> np.ndarray:
    return x[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _lap_var(y: np.ndarray) -> float:
    lap = y[1:-1, :-2] + y[1:-1, 2:] + y[:-2, 1:-1] + y[2:, 1:-1] - 4 * y[1:-1, 1:-1]
    return float(lap.var())


def _box3(y: np.ndarray) -> np.ndarray:
    p = np.pad(y, 1, mode="edge")
    return sum(p[i : i + y.shape[0], j : j + y.shape[1]] for i in range(3) for j in range(3)) / 9


def _hf_energy(y: np.ndarray) -> float:
    return float(((y - _box3(y)) ** 2).mean())


def _blocky(x: np.ndarray) -> float:
    """Share of columns (and of rows; the smaller) across which the image barely changes, as inside mosaic
    blocks: about 1 - 1/block for a mosaic, near 0 for a photo."""
    y = _luma(x)
    shares = []
    for d in (np.abs(np.diff(y, axis=1)).mean(axis=0), np.abs(np.diff(y, axis=0)).mean(axis=1)):
        shares.append(float(np.mean(d < 0.2 * d.mean())))
    return min(shares)


def _added_noise(img: np.ndarray, orig: np.ndarray, smoothed: bool) -> float:
    """Per-channel std of the noise a copy adds over its original's fine texture (in 0-255 units)."""
    r = np.mean([(c - _box3(c)).std() for c in np.moveaxis(img.astype(np.float32), -1, 0)])
    r0 = np.mean([(c - _box3(c)).std() for c in np.moveaxis(orig.astype(np.float32), -1, 0)])
    # a tone change made before the noise scales the original's texture too: the smoothed spreads say how much
    # (none is left under a blur made before the noise: ``smoothed``)
    k = 0.0 if smoothed else min(1.0, float(_box3(_luma(img)).std() / max(_box3(_luma(orig)).std(), 1e-6)))
    return float(np.sqrt(max(r**2 - (k * r0) ** 2, 0.0)) * 1.06)  # the 3x3 box takes 1/9 of the noise with it


def _bars(x: np.ndarray, tol: float) -> float:
    """Share of rows (or columns) in uniform bars of one colour on both opposite sides."""
    best = 0.0
    for a in (x.astype(np.float32), x.astype(np.float32).transpose(1, 0, 2)):
        flat = a.std(axis=1).max(axis=-1) <= tol
        ref_top, ref_bottom = a[0].mean(axis=0), a[-1].mean(axis=0)
        same_t = flat & (np.abs(a.mean(axis=1) - ref_top).max(axis=-1) <= tol)
        same_b = flat & (np.abs(a.mean(axis=1) - ref_bottom).max(axis=-1) <= tol)
        top = int(np.argmin(same_t)) if not same_t.all() else len(a)
        bottom = int(np.argmin(same_b[::-1])) if not same_b.all() else len(a)
        if top > 0 and bottom > 0:
            best = max(best, (top + bottom) / len(a))
    return best


def _visible(defect: str, row, img: np.ndarray, orig: np.ndarray, path: Path) -> str | None:
    """None when ``defect`` shows in the pixels against the clean original, else what failed."""
    y, y0 = _luma(img), _luma(orig)
    others = set(row["defects"].split("+")) - {defect}
    same = img.shape == orig.shape and "letterboxed" not in others
    if defect == "blurry" and not {"noisy", "jpeg_artifacts"} & others:  # both add fine detail back
        if not _lap_var(y) < 0.3 * _lap_var(y0):
            return f"Laplacian variance {_lap_var(y):.1f} vs {_lap_var(y0):.1f}"
    elif defect == "low_resolution":
        if not _hf_energy(y) < 0.5 * _hf_energy(y0):
            return f"high-frequency energy {_hf_energy(y):.2f} vs {_hf_energy(y0):.2f}"
    elif defect == "jpeg_artifacts":
        im = Image.open(path)
        q = im.quantization if im.format == "JPEG" else None
        if not q or np.mean(q[0]) < 60:  # libjpeg's luma table at quality 20 averages about 145
            return f"not a low-quality JPEG ({im.format}, table mean {np.mean(q[0]) if q else None})"
    elif defect == "noisy":
        if not (added := _added_noise(img, orig, smoothed="blurry" in others)) >= 12:  # DESIGN: std >= 12/255
            return f"added noise std {added:.1f}"
    elif defect == "overexposed":
        c = float(np.mean(np.all(img >= 250, axis=-1)))
        if not c >= 0.25:
            return f"clipped share {c:.2f}"
    elif defect == "underexposed":
        if not (y.mean() <= 60 and y0.mean() >= 70):
            return f"mean luma {y.mean():.0f} (clean {y0.mean():.0f})"
    elif defect == "low_contrast":
        if "noisy" in others:  # the spread of the picture, not of the noise on top of it
            y, y0, limit = _box3(_box3(y)), _box3(_box3(y0)), 0.4
        else:
            limit = 0.35
        if not y.std() <= limit * y0.std():
            return f"luma std {y.std():.1f} vs {y0.std():.1f}"
    elif defect == "letterboxed":
        share = _bars(img, tol=6.0 if "jpeg_artifacts" in others or path.suffix == ".jpg" else 1.0)
        if not share >= 0.12:
            return f"uniform bars cover {share:.2f}"
    elif defect == "watermark" and same:
        d = np.abs(y - y0)
        if not (np.mean(d > 8) > 0.02 and d.mean() < 60):
            return f"changed share {np.mean(d > 8):.3f}, mean change {d.mean():.1f}"
    elif defect == "pixelated" and "jpeg_artifacts" not in others:
        m, m0 = _blocky(img), _blocky(orig)
        if not (m >= 0.5 and m >= m0 + 0.3):
            return f"block-interior share {m:.2f} vs {m0:.2f}"
    return None


def test_tiny_build_labels_are_exact_and_visible(tmp_path):
    rp = _load("realphoto")
    manifest = rp.build(tmp_path / "rp", n=24, seed=5, allow_fallback=True, progress=False)
    tags = load_taxonomy().tag_names
    df = read_manifest(manifest)
    assert len(df) == 24
    for col in ("path", "quality", "pair", "source_photo", "licence", *tags):
        assert col in df.columns, col
    y = label_matrix(df, tags)
    assert not np.isnan(y).any() and set(np.unique(y)) <= {0.0, 1.0}
    assert df["licence"].astype(str).str.len().min() > 0
    assert df["quality"].between(0, 1).all()

    originals = df[df["role"] == "original"].set_index("pair")
    degraded = df[df["role"] == "degraded"]
    assert len(originals) >= 5 and len(degraded) >= 10
    assert (originals["quality"] <= 1).all() and (originals.loc[originals["text_heavy"] == 0, "quality"] == 1).all()
    seen, problems = set(), []
    for _, row in degraded.iterrows():
        clean = originals.loc[row["pair"]]
        assert row["quality"] < clean["quality"], row["path"]
        for c in ("has_text", "has_logo", "has_cta", "text_heavy"):
            assert row[c] == clean[c], (row["path"], c)
        defects = row["defects"].split("+")
        assert {t for t in rp.DEFECTS if row[t] == 1} == set(defects), row["path"]
        img = np.asarray(Image.open(row["abspath"]).convert("RGB"))
        orig = np.asarray(Image.open(clean["abspath"]).convert("RGB"))
        for d in defects:
            seen.add(d)
            if (why := _visible(d, row, img, orig, Path(row["abspath"]))) is not None:
                problems.append(f"{row['path']} {d} ({row['methods']}): {why}")
    assert not problems, "\n".join(problems)
    assert len(seen) >= 8, seen  # the defects are dealt in shuffled rounds, so a small build covers most

    # text_heavy follows the text boxes' share of the area, clearly on its side of DESIGN's 20 %
    frac = originals["text_fraction"]
    assert (frac[originals["text_heavy"] == 1] >= 0.2).all() and (frac[originals["text_heavy"] == 0] < 0.1).all()
    # a clean JPEG is high quality, never jpeg_artifacts
    for p in originals["abspath"]:
        im = Image.open(p)
        if im.format == "JPEG":
            assert np.mean(im.quantization[0]) < 20, p

    # made once: the same key returns the cached manifest without rebuilding
    stamp = manifest.stat().st_mtime_ns
    assert rp.build(tmp_path / "rp", n=24, seed=5, allow_fallback=True, progress=False) == manifest
    assert manifest.stat().st_mtime_ns == stamp


def test_missing_assets_name_make_bench_data(monkeypatch):
    rp = _load("realphoto")
    monkeypatch.setattr(rp, "_resolve", lambda src, root=None: None)
    with pytest.raises(rp.MissingAssets, match="make bench-data"):
        rp.find_photos()


def test_rules_features_separate_a_clean_creative_from_its_degradations():
    rules = _load("rules")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:320, 0:480]
    clean = np.stack([(xx * 0.4) % 255, (yy * 0.7) % 255, ((xx + yy) * 0.3) % 255], -1)
    clean = clean + rng.normal(0, 1.0, clean.shape)
    for k in range(0, 480, 24):
        clean[:, k : k + 3] = 20  # sharp edges
    clean = np.clip(clean, 0, 255).astype(np.uint8)
    noisy = np.clip(clean + rng.normal(0, 30, clean.shape), 0, 255).astype(np.uint8)
    dark = (clean * 0.2).astype(np.uint8)
    boxed = clean.copy()
    boxed[:40] = 0
    boxed[-40:] = 0
    f0, fn, fd, fb = (rules.features(x) for x in (clean, noisy, dark, boxed))
    assert fn["noise_sigma"] > f0["noise_sigma"] + 10
    assert fd["luma_mean"] < 0.3 * f0["luma_mean"]
    assert fb["bar_share"] >= 0.2 and f0["bar_share"] == 0
    df = pd.DataFrame({"path": ["a", "b", "c", "d"] * 3, "noisy": [0, 1, 0, 0] * 3, "underexposed": [0, 0, 1, 0] * 3})
    x = np.array([[f[k] for k in rules.FEATURE_NAMES] for f in (f0, fn, fd, fb)] * 3)
    checker = rules.RuleChecker(["noisy", "underexposed"]).fit(df, x)
    s = checker.score(x[:4])
    assert s[1, 0] == s[:, 0].max() and s[2, 1] == s[:, 1].max()
    direct = checker.score(x[:4], direct=True)
    assert direct[1, 0] == direct[:, 0].max() and direct[2, 1] == direct[:, 1].max()


def test_rules_features_in_worker_processes_are_spawned_and_match_one_process(tmp_path):
    """The rule checker's measurements in a pool come from spawned processes (a fork of a process that has
    trained deadlocked the grid's rules arm) and equal the measurements made in one process."""
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    code = (
        "import sys, json, pathlib, concurrent.futures as cf; sys.path.insert(0, 'benchmarks'); import rules\n"
        "methods = []\n"
        "class Spy(cf.ProcessPoolExecutor):\n"
        "    def __init__(self, *a, mp_context=None, **k):\n"
        "        methods.append(mp_context.get_start_method() if mp_context else 'default')\n"
        "        super().__init__(*a, mp_context=mp_context, **k)\n"
        "cf.ProcessPoolExecutor = Spy\n"
        "if __name__ == '__main__':\n"
        f"    paths = sorted(str(p) for p in pathlib.Path({str(tmp_path)!r}).glob('*.png'))\n"
        "    a = rules.feature_matrix(paths, workers=2, progress=False)\n"
        "    b = rules.feature_matrix(paths, workers=1, progress=False)\n"
        "    print(json.dumps({'methods': methods, 'equal': bool((a == b).all()), 'shape': list(a.shape)}))\n"
    )
    script = tmp_path / "probe.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["methods"] == ["spawn"] and out["equal"] and out["shape"][0] == 3, out
