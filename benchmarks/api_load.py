"""Serving throughput and latency on loopback: the API (batching on / off) vs the in-process Scorer vs MLflow.

    python benchmarks/api_load.py                                   # default recipe's model, 3 rounds x 200 requests
    python benchmarks/api_load.py --model models:/creative-qa@champion   # a trained, registered model
    python benchmarks/api_load.py --quick                           # CI smoke size

For each concurrency (1, 8, 32) a fixed number of requests, each one synthetic creative
(a JPEG from the built-in generator), is scored by (the modes interleaved over a few
rounds, each row the median round, so a shared machine's load drift hits all alike):

  (a) api-batching   `creative-qa serve` (uvicorn, one process), CREATIVE_QA_BATCHING=true
  (b) api-nobatch    the same server with CREATIVE_QA_BATCHING=false; the server's own default
                     (auto) is (a) where a GPU provider serves and (b) on CPU, and the ratios
                     below take "the API" to be that default
  (c) in-process     `Scorer.score_bytes` driven from a thread pool at the same concurrency
                     (no HTTP: the limit the API approaches), with the server's onnxruntime
                     session settings
  (d) mlflow-serve   `mlflow models serve --env-manager local` on the same ONNX file, registered
                     (with a tensor signature) in a private MLflow store; its pyfunc takes
                     tensors, so the client decodes and preprocesses each creative (the
                     shared `preprocess`) and posts the views as JSON

It prints throughput, p50/p99 latency, non-200 counts and CPU milliseconds per request (the
server's process tree; this process: the load threads, or (c)'s whole scoring) per row, the ratios of the API (its
default mode here) to (c) and to (d), and (a)/(b),
and each server's peak memory (resident set of its process tree, sampled, and the
kernel's high-water mark), and writes JSON (default: benchmarks/results/serving.json).
Without ``--model`` the default recipe's architecture with random weights is exported
(weights do not change the speed) and registered in a private MLflow store, so (d)
serves exactly the file (a)-(c) score.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import export_random_model  # noqa: E402

from creative_qa.machine import cpu_count  # noqa: E402
from creative_qa.onnx_model import load_model  # noqa: E402
from creative_qa.paths import home  # noqa: E402
from creative_qa.scorer import Scorer  # noqa: E402
from serving.engine import batching_on  # noqa: E402
from serving.settings import Settings  # noqa: E402

BENCH_NAME = "creative-qa-bench"


# --- model and payloads ---------------------------------------------------------------------


def export_default(work: Path, recipe: str) -> Path:
    """The recipe's architecture, random weights, exported through the real export path."""
    return export_random_model(recipe, work / "bench.onnx", "1", BENCH_NAME)


def register(onnx_path: Path, store: str) -> str:
    """Log ``onnx_path`` as an MLflow ONNX model in ``store`` and register it; returns its models:/ URI."""
    import mlflow.onnx
    import onnx
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    import mlflow
    from training.tracking import setup

    spec = Scorer(onnx_path).spec
    example = np.zeros((1, spec.views, spec.input_size, spec.input_size, 3), np.uint8)
    with mlflow.start_run(experiment_id=setup("serving-benchmark", store), run_name="serving-benchmark"):
        # NOTE: without a signature the pyfunc feeds JSON integers as int64 and the uint8 graph refuses them.
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="onnx",
            pip_requirements=["onnxruntime"],
            signature=infer_signature({"images": example}),
        )
    mv = mlflow.register_model(info.model_uri, BENCH_NAME)
    MlflowClient(store).set_registered_model_alias(BENCH_NAME, "bench", mv.version)
    return f"models:/{BENCH_NAME}@bench"


def payloads(n: int, size: int, seed: int = 0) -> list[bytes]:
    """``n`` synthetic creatives (short side ``size``) as JPEG bytes."""
    from creative_qa.synth import SynthConfig, make_creative
    from creative_qa.synth.defects import to_pil

    rng = np.random.default_rng(seed)
    cfg = SynthConfig(size=size)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        to_pil(make_creative(rng, cfg).image).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# --- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess whose process-tree memory is sampled while it runs."""

    def __init__(self, cmd: list[str], env: dict[str, str], ready_path: str, port: int, timeout_s: float = 300):
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.peak_tree_rss = 0
        self._stop = threading.Event()
        deadline = time.time() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{cmd[:4]} not ready after {timeout_s} s")
            time.sleep(0.25)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _tree_rss(self) -> int:
        try:
            p = psutil.Process(self.proc.pid)
            return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])
        except psutil.Error:
            return 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_tree_rss = max(self.peak_tree_rss, self._tree_rss())
            self._stop.wait(0.02)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server's process tree has used so far."""
        try:
            p = psutil.Process(self.proc.pid)
            return sum(sum(q.cpu_times()[:2]) for q in [p, *p.children(recursive=True)])
        except psutil.Error:
            return float("nan")

    def high_water_mark(self) -> int:
        """The kernel's peak RSS (VmHWM) of the server's main process, bytes."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def stop(self) -> dict[str, float]:
        mem = {"peak_tree_rss_mb": self.peak_tree_rss / 2**20, "vmhwm_mb": self.high_water_mark() / 2**20}
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return mem


def creative_qa_server(onnx_path: Path, batching: bool, env: dict[str, str]) -> Server:
    port = free_port()
    env = {**env, "CREATIVE_QA_BATCHING": "true" if batching else "false"}
    cmd = [sys.executable, "-m", "creative_qa.cli", "serve", "--model", str(onnx_path), "--port", str(port)]
    return Server(cmd, env, "/readyz", port)


def mlflow_server(uri: str, env: dict[str, str]) -> Server:
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe), "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    return Server(cmd, env, "/ping", port)


# --- load ------------------------------------------------------------------------------------


def summarise(name: str, conc: int, lat: list[float], statuses: list[int], wall: float) -> dict[str, Any]:
    lat_ms = sorted(1000 * x for x in lat)
    return {
        "mode": name,
        "concurrency": conc,
        "requests": len(statuses),
        "req_per_s": len(statuses) / wall,
        "p50_ms": statistics.median(lat_ms),
        "p99_ms": lat_ms[min(len(lat_ms) - 1, int(round(0.99 * (len(lat_ms) - 1))))],
        "n_5xx": sum(s >= 500 for s in statuses),
        "n_non_200": sum(s != 200 for s in statuses),
    }


class RawClient:
    """A minimal blocking HTTP/1.1 keep-alive client, one connection per load thread (like ``wrk``).

    The load generator shares the server's cores, so it must cost them as little as possible:
    httpx costs about a millisecond a request, an asyncio stream client about 0.8 ms, this about
    a fifth of that (its socket calls release the GIL)."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.sock: socket.socket | None = None
        self.buf = b""

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def post(self, path: str, body: bytes, ctype: str) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + body)
        status = int(self._line().split()[1])
        length, chunked = 0, False
        while line := self._line():
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, self._take(length)
        parts = []
        while (size := int(self._line().strip(), 16)) > 0:
            parts.append(self._take(size))
            self._line()
        self._line()
        return status, b"".join(parts)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def multipart(data: bytes, name: str) -> tuple[bytes, str]:
    """A multipart/form-data body with one ``file`` part, and its content type."""
    boundary = "creativeqabenchboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _http_load(url: str, conc: int, n: int, make_request) -> tuple[list[float], list[int], float]:
    """``n`` requests from ``conc`` threads, each with its own keep-alive connection."""
    lat: list[float] = []
    statuses: list[int] = []
    errors: list[BaseException] = []
    counter = iter(range(n))
    lock = threading.Lock()

    def worker() -> None:
        client = RawClient(url)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t = time.perf_counter()
                status, _ = make_request(client, i)
                lat.append(time.perf_counter() - t)
                statuses.append(status)
        except BaseException as e:  # noqa: BLE001  (re-raised below: a load thread must not fail silently)
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} load thread(s) failed, first: {errors[0]!r}") from errors[0]
    return lat, statuses, wall


def api_load(
    url: str, conc: int, n: int, data: list[bytes], use_multipart: bool
) -> tuple[list[float], list[int], float]:
    bodies = [multipart(d, f"{i}.jpg") if use_multipart else (d, "image/jpeg") for i, d in enumerate(data)]

    def request(client: RawClient, i: int) -> tuple[int, bytes]:
        body, ctype = bodies[i % len(bodies)]
        return client.post("/v1/score", body, ctype)

    return _http_load(url, conc, n, request)


def mlflow_load(url: str, conc: int, n: int, data: list[bytes], scorer: Scorer) -> tuple:
    def request(client: RawClient, i: int) -> tuple[int, bytes]:
        # the client does what the pyfunc cannot: decode + preprocess, and the tensor as JSON
        x = scorer.prepare(scorer.decode(data[i % len(data)]))
        return client.post("/invocations", json.dumps({"inputs": {"images": x.tolist()}}).encode(), "application/json")

    return _http_load(url, conc, n, request)


def inprocess_load(scorer: Scorer, conc: int, n: int, data: list[bytes]) -> tuple:
    def one(i: int) -> tuple[float, int]:
        t = time.perf_counter()
        scorer.score_bytes(data[i % len(data)])
        return time.perf_counter() - t, 200

    with ThreadPoolExecutor(conc) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(one, range(n)))
        wall = time.perf_counter() - t0
    return [r[0] for r in results], [r[1] for r in results], wall


# --- main ------------------------------------------------------------------------------------


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'mode':<14} {'conc':>4} {'req':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'5xx':>4} {'!200':>5} "
        f"{'CPU ms/req: server':>18} {'this process':>12}"
    )
    for r in rows:
        srv = r.get("cpu_ms_per_req_server")
        print(
            f"{r['mode']:<14} {r['concurrency']:>4} {r['requests']:>5} {r['req_per_s']:>8.1f} "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['n_5xx']:>4} {r['n_non_200']:>5} "
            f"{'-' if srv is None else f'{srv:.2f}':>18} {r.get('cpu_ms_per_req_this_process', float('nan')):>12.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="ONNX path or models:/ URI (default: export the recipe's model)")
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--concurrency", default=None, help="comma-separated (default 1,8,32; --quick: 1,8)")
    ap.add_argument("--requests", type=int, default=200, help="requests per mode, concurrency and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each row is the median round")
    ap.add_argument("--size", type=int, default=512, help="short side of the synthetic creatives")
    ap.add_argument("--modes", default="api-batching,api-nobatch,in-process,mlflow-serve")
    ap.add_argument("--multipart", action="store_true", help="upload as multipart 'file' (default: raw body)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a CI smoke run")
    ap.add_argument("--out", default="benchmarks/results/serving.json")
    a = ap.parse_args()
    if a.quick:
        a.requests, a.size, a.rounds = 24, 256, 1
    a.concurrency = a.concurrency or ("1,8" if a.quick else "1,8,32")
    concs = [int(c) for c in a.concurrency.split(",")]
    modes = a.modes.split(",")

    work = home() / "bench" / "serving"
    work.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_TRACKING_URI": store}
    # NOTE: `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if a.model and a.model.startswith(("models:/", "runs:/")):
        # NOTE: the servers are separate processes that take a path: a copy this benchmark owns.
        onnx_path = load_model(a.model).write(work / "registry_model.onnx")
    else:
        onnx_path = Path(a.model) if a.model else export_default(work, a.recipe)
    # The same ONNX file, registered with a tensor signature in a private store for (d).
    uri = register(onnx_path, store) if "mlflow-serve" in modes else ""
    data = payloads(16, a.size)
    # NOTE: (c) runs onnxruntime with the server's session settings (intra-op threads = cores, no
    # spin-waiting): the default session's spinning threads fight the caller's threads for the cores.
    cores = cpu_count()
    scorer = Scorer(onnx_path, intra_op_threads=cores)
    # The API's own default: dynamic batching where a GPU provider serves, none on CPU.
    providers = scorer.onnx.providers
    api = "api-batching" if batching_on(Settings(batching=None), providers) else "api-nobatch"
    print(
        f"model {onnx_path.name}: {scorer.spec.views} views of {scorer.spec.input_size}px; "
        f"creatives {a.size}px JPEG (~{np.mean([len(d) for d in data]) / 1024:.0f} KB); "
        f"{a.requests} requests per row; {cores} cores; upload {'multipart' if a.multipart else 'raw body'}"
    )

    # All servers up at once and the modes interleaved, round by round, so a change in the
    # machine's load (shared machines) hits every mode alike; each row is the median round.
    servers: dict[str, Server] = {}
    runners: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for mode in modes:
        try:
            if mode in ("api-batching", "api-nobatch"):
                srv = servers[mode] = creative_qa_server(onnx_path, mode == "api-batching", env)
                runners[mode] = lambda c, n, url=srv.url: api_load(url, c, n, data, a.multipart)
            elif mode == "mlflow-serve":
                srv = servers[mode] = mlflow_server(uri, env)
                runners[mode] = lambda c, n, url=srv.url: mlflow_load(url, c, n, data, scorer)
            elif mode == "in-process":
                runners[mode] = lambda c, n: inprocess_load(scorer, c, n, data)
            else:
                raise ValueError(f"unknown mode {mode}")
        except Exception as e:  # noqa: BLE001  (a mode that cannot start is reported; the others run)
            errors[mode] = f"{type(e).__name__}: {e}"
            print(f"{mode}: FAILED to start: {errors[mode]}")
    rows: list[dict[str, Any]] = []
    try:
        for c in concs:
            rounds: dict[str, list[dict[str, Any]]] = {m: [] for m in runners}
            for run in runners.values():
                run(c, max(2 * c, 8))  # warm-up
            for _ in range(a.rounds):
                for mode, run in runners.items():
                    # mlflow-serve is an order of magnitude slower: fewer requests keep the run short.
                    n = max(c, a.requests // 4) if mode == "mlflow-serve" else a.requests
                    # CPU per request: where the cores go (a 2-core box shares them with the load threads)
                    srv, me = servers.get(mode), psutil.Process()
                    srv0, me0 = srv.cpu_s() if srv else 0.0, sum(me.cpu_times()[:2])
                    r = summarise(mode, c, *run(c, n))
                    r["cpu_ms_per_req_server"] = 1000 * (srv.cpu_s() - srv0) / n if srv else None
                    r["cpu_ms_per_req_this_process"] = 1000 * (sum(me.cpu_times()[:2]) - me0) / n
                    rounds[mode].append(r)
            for rs in rounds.values():
                rs.sort(key=lambda r: r["req_per_s"])
                row = dict(rs[len(rs) // 2])
                row["n_5xx"], row["n_non_200"] = sum(r["n_5xx"] for r in rs), sum(r["n_non_200"] for r in rs)
                row["requests"] = sum(r["requests"] for r in rs)
                row["req_per_s_rounds"] = [round(r["req_per_s"], 1) for r in rs]
                rows.append(row)
                print_rows([row])
    finally:
        memory = {mode: srv.stop() for mode, srv in servers.items()}

    by = {(r["mode"], r["concurrency"]): r["req_per_s"] for r in rows}

    def ratio(x: str, y: str, c: int) -> float | None:
        return by[(x, c)] / by[(y, c)] if (x, c) in by and (y, c) in by else None

    ratios = {
        c: {
            "api/in-process": ratio(api, "in-process", c),
            "api/mlflow-serve": ratio(api, "mlflow-serve", c),
            "batching/nobatch": ratio("api-batching", "api-nobatch", c),
        }
        for c in concs
    }
    print()
    print_rows(rows)
    print(f"\nthe API as shipped here (CREATIVE_QA_BATCHING auto, providers {providers}) is {api}")
    for c, r in ratios.items():
        cells = "  ".join(f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in r.items())
        print(f"concurrency {c:>3}: {cells}")
    for mode, m in memory.items():
        tree, hwm = m["peak_tree_rss_mb"], m["vmhwm_mb"]
        print(f"{mode:<14} server peak memory: {tree:.0f} MB (process tree, sampled), VmHWM {hwm:.0f} MB")
    for mode, e in errors.items():
        print(f"{mode}: {e}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "model": str(onnx_path),
        "registered": uri,
        "views": scorer.spec.views,
        "input_size": scorer.spec.input_size,
        "creative_side": a.size,
        "requests": a.requests,
        "upload": "multipart" if a.multipart else "raw",
        "cores": cores,
        "machine": platform.processor() or platform.machine(),
    }
    payload = {"info": info, "api": api, "rows": rows, "ratios": ratios, "memory": memory, "errors": errors}
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
