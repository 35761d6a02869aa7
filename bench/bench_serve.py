"""Throughput and latency of `clipforge serve` for N concurrent clients (BENCHMARKS.md, "Serving").

    .venv/bin/python bench/bench_serve.py [--clients 8] [--seconds 20] [--model M] [--json out.json]

Builds an index of the bundled sample images (the bundled clipforge-mini model unless --model),
starts `clipforge serve` on a free loopback port in its own process, and runs each workload with
`--clients` client threads (one keep-alive connection each) for `--seconds` after a warm-up:

  text   GET  /api/search?q=...&k=10  (queries rotate over a list, so nothing is cached)
  image  POST /api/search, a sample image uploaded (decode + preprocess + encode + search)

once with the default micro-batching (--max-batch 32 --max-wait-ms 5) and once with batches of
one (--max-batch 1), plus a single client for the unloaded latency. It reports requests/s, p50 and
p99 latency, and the mean batch the model worker ran (from /api/health). Clients run on the same
machine as the server, so on a small CPU they take part of it: the figures are for the pair.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
QUERIES = [
    "a bird", "food", "a red car", "a map of the world", "a person on the beach", "a warning sign", "a compass",
    "playing cards", "the moon at night", "an apple with a worm", "an airplane", "electric danger", "a drawing",
    "an eagle", "fruit", "a symbol", "transportation", "astronomy", "a holiday trip", "a tool",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_index(out: Path, model: str | None) -> None:
    table = ROOT / "src" / "clipforge" / "bundled" / "samples" / "samples.jsonl"
    cmd = [sys.executable, "-m", "clipforge.cli.main", "index", str(table), "--out", str(out), "--workers", "0",
           "--no-progress"] + (["--model", model] if model else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


class Server:
    def __init__(self, index: Path, extra: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "clipforge.cli.main", "serve", str(index), "--port", str(self.port),
               "--log-level", "warning", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                if requests.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def encoder_stats(self) -> dict:
        return requests.get(f"{self.url}/api/health", timeout=10).json()["encoder"]


def run_load(url: str, workload: str, clients: int, seconds: float, images: list[bytes]) -> dict:
    """`clients` threads, each sending requests back to back for `seconds`; latencies of requests that finished."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(c: int) -> None:
        session = requests.Session()
        mine, bad, i = [], [], c * 7
        start_gate.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            if workload == "text":
                r = session.get(f"{url}/api/search", params={"q": QUERIES[i % len(QUERIES)], "k": 10}, timeout=60)
            else:
                r = session.post(f"{url}/api/search", files={"image": ("q.png", images[i % len(images)], "image/png")},
                                 data={"k": "10"}, timeout=60)
            elapsed = time.perf_counter() - t0
            if r.status_code == 200:
                mine.append(elapsed)
            else:
                bad.append(f"{r.status_code} {r.text[:100]}")
            i += 1
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [latencies[0]] * 99
    return {"requests": len(latencies), "errors": len(errors), "error_samples": errors[:3], "seconds": round(wall, 2),
            "rps": round(len(latencies) / wall, 1), "p50_ms": round(1e3 * statistics.median(latencies), 1),
            "p99_ms": round(1e3 * q[98], 1), "mean_ms": round(1e3 * statistics.fmean(latencies), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--model", help="model for the index (default: the bundled clipforge-mini)")
    parser.add_argument("--workloads", nargs="+", default=["text", "image"], choices=["text", "image"])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    samples = sorted((ROOT / "src" / "clipforge" / "bundled" / "samples").glob("*.png"))
    images = [p.read_bytes() for p in samples]
    load_before = os.getloadavg()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f} "
          f"at the start; Python {platform.python_version()}", flush=True)
    configs = [("micro-batches (32, 5 ms)", ["--max-batch", "32", "--max-wait-ms", "5"], args.clients),
               ("batches of one", ["--max-batch", "1", "--max-wait-ms", "0"], args.clients),
               ("one client", ["--max-batch", "32", "--max-wait-ms", "5"], 1)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "samples.index"
        build_index(index, args.model)
        for name, extra, clients in configs:
            with Server(index, extra) as server:
                for workload in args.workloads:
                    run_load(server.url, workload, clients, args.warmup, images)
                    before = server.encoder_stats()
                    result = run_load(server.url, workload, clients, args.seconds, images)
                    after = server.encoder_stats()
                    batches = after["batches"] - before["batches"]
                    result["mean_batch"] = round((after["items"] - before["items"]) / batches, 2) if batches else 0.0
                    row = {"config": name, "workload": workload, "clients": clients, **result}
                    rows.append(row)
                    print(f"{name:<26} {workload:<6} {clients:>2} clients: {row['rps']:>7.1f} req/s  "
                          f"p50 {row['p50_ms']:>6.1f} ms  p99 {row['p99_ms']:>6.1f} ms  mean batch {row['mean_batch']:>5.2f}"
                          f"  ({row['requests']} requests, {row['errors']} errors)", flush=True)
    load_after = os.getloadavg()
    print(f"load average {load_after[0]:.2f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps({"load_average": [load_before[0], load_after[0]], "rows": rows}, indent=2))
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
