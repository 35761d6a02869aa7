"""clipforge against open_clip, transformers and OpenAI's clip: one command, one machine, one run.

    .venv/bin/python bench/run.py --threads 1 2 --rounds 5 [--quick] [--json out.json] [--cache DIR]

Same weights: one open_clip model per architecture with random weights (QuickGELU, random
BatchNorm statistics), written once in each library's format; every library loads those tensors.
Same inputs: pixels from a fixed seed, the same token ids (clipforge's tokenizer, checked equal to
OpenAI's `clip.tokenize`), the same image files.

One worker process per library, started once. Each round runs every workload, at every thread count,
through every library in turn (call by call, the starting library rotating each round), so
background load on a shared machine hits all of them alike. A warm-up pass comes first, untimed; its
outputs are compared with open_clip's (the weights' own library) and the max abs difference is
printed next to the speed. Reported: median rate, min-max over rounds, and the per-round paired
ratio to the best peer (median and min-max of rate(row, round) / rate(best peer, round)).

Also measured: tokenizer captions/s (bench/bench_tokenizer.py's libraries), import time and
`clipforge --help` (fresh interpreters), peak RSS of a fresh process per library, and a large fp32
SGEMM with the same thread counts, the ceiling against which the image tower's FLOP/s are stated.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
warnings.filterwarnings("ignore")

import torch  # noqa: E402

import workloads as wl  # noqa: E402
from workloads import REFERENCE, VARIANTS, Group, Workload  # noqa: E402

EOT = 49407
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ---- workers -------------------------------------------------------------------------------------


class Worker:
    """A library's process; `call` sends one op and waits for its answer."""

    def __init__(self, name: str, ctx: Any) -> None:
        import workers

        self.name = name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=workers.serve, args=(child, name), daemon=False, name=f"bench-{name}")
        self.proc.start()
        child.close()

    def call(self, op: str, *args: Any) -> Any:
        self.conn.send((op, *args))
        status, result = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"worker {self.name} failed on {op}:\n{result}")
        return result

    def stop(self) -> None:
        try:
            self.call("stop")
        except (EOFError, BrokenPipeError, RuntimeError):
            pass
        self.proc.join(timeout=30)


# ---- inputs --------------------------------------------------------------------------------------


def make_tokens(texts: list[str]) -> torch.Tensor:
    from clipforge.text import Tokenizer

    return Tokenizer()(texts)


def token_inputs(groups: list[Group], info: dict) -> dict[str, torch.Tensor]:
    """Token ids per text/train workload, checked against OpenAI's tokenizer."""
    import clip

    out = {}
    for g in groups:
        for w in g.workloads:
            if w.kind not in ("text", "train"):
                continue
            texts = wl.captions(w.items, seed=w.seed + (1 if w.kind == "train" else 0))
            ids = make_tokens(texts)
            mismatched = int((ids != clip.tokenize(texts, truncate=True)).any(1).sum())
            lengths = (ids == EOT).int().argmax(1) + 1
            per_batch = lengths.view(w.reps, w.batch).max(1).values.float()
            info[f"tokens {w.key}"] = {
                "texts": len(texts), "median_tokens": float(lengths.float().median()),
                "mean_tokens": float(lengths.float().mean()), "median_batch_max": float(per_batch.median()),
                "rows_differing_from_openai": mismatched,
            }
            out[f"tokens {w.key}"] = ids
    return out


# ---- the model workloads -------------------------------------------------------------------------


def run_groups(args: argparse.Namespace, groups: list[Group], weights_root: Path, results: dict) -> None:
    ctx = mp.get_context("spawn")
    names = sorted({n for g in groups for n in g.workers})
    log(f"starting workers: {', '.join(names)}")
    workers = {n: Worker(n, ctx) for n in names}
    e2e_dir = tempfile.mkdtemp(prefix="clipforge-bench-e2e-")
    try:
        tokens = token_inputs(groups, results["inputs"])
        file_sets = {w.files for g in groups for w in g.workloads if w.kind == "e2e"}
        files = {name: wl.FILE_SETS[name]() for name in sorted(file_sets)}
        for name, paths in files.items():
            results["inputs"][f"e2e files ({name})"] = describe_files(paths)
        for g in groups:  # a file set that could not be fetched drops its workload
            g.workloads = [w for w in g.workloads if w.kind != "e2e" or files[w.files]]
        for w in workers.values():
            for key, value in tokens.items():
                w.call("put", key, value)
            for name, paths in files.items():
                w.call("put", f"files_{name}", paths)
            w.call("put", "e2e_dir", e2e_dir)
        for g in groups:
            run_group(args, g, workers, weights_root, results)
        for n, w in workers.items():
            results["worker_peak_rss_mb"][n] = w.call("rss")
    finally:
        for w in workers.values():
            w.stop()
        shutil.rmtree(e2e_dir, ignore_errors=True)


def describe_files(files: list[str]) -> dict:
    from PIL import Image

    if not files:
        return {"n": 0}
    sizes = []
    for f in files:
        with Image.open(f) as im:
            sizes.append(im.width * im.height)
    return {
        "n": len(files), "jpeg": sum(f.endswith(".jpg") for f in files), "png": sum(f.endswith(".png") for f in files),
        "median_kpx": statistics.median(sizes) / 1e3, "min_kpx": min(sizes) / 1e3, "max_kpx": max(sizes) / 1e3,
        "total_mb": sum(os.path.getsize(f) for f in files) / 1e6,
    }


def run_group(args: argparse.Namespace, g: Group, workers: dict, weights_root: Path, results: dict) -> None:
    log(f"== {g.name}: preparing weights")
    paths = wl.prepare_weights(g.arch, weights_root)
    for n in g.workers:
        info = workers[n].call("load", paths, g.train)
        results["load"][f"{g.name} / {n}"] = info
        if "image_flops" in info:
            results["image_flops_counted"][g.arch] = info["image_flops"]
    log(f"   loaded in {', '.join(n for n in g.workers)}; warm-up and output check")
    for w in g.workloads:
        for t in args.threads:
            for v in w.variants:
                r = workers[VARIANTS[v].worker].call("run", v, w, t, True)
                results["outputs"][(w.key, t, v)] = r["output"]
    for rnd in range(args.rounds):
        start = time.perf_counter()
        for w in g.workloads:
            for ti, t in enumerate(args.threads):
                k = (rnd + ti) % len(w.variants)
                for v in w.variants[k:] + w.variants[:k]:
                    r = workers[VARIANTS[v].worker].call("run", v, w, t, False)
                    results["times"][(w.key, t, v)].append(r["seconds"])
        log(f"   round {rnd + 1}/{args.rounds}: {time.perf_counter() - start:.0f}s")
    for n in g.workers:
        workers[n].call("unload")
    for w in g.workloads:
        results["workloads"][w.key] = w


# ---- tokenizer, imports, memory ------------------------------------------------------------------


def run_tokenizer(args: argparse.Namespace, results: dict) -> None:
    """bench/bench_tokenizer.py's libraries on the Debian captions, interleaved by round."""
    log("== tokenizer")
    import bench_tokenizer

    libraries = bench_tokenizer.load_libraries()
    texts = wl.captions(10_000, seed=7)
    for fn in libraries.values():
        fn(wl.captions(200, seed=99))  # warm-up: imports, lazy vocabulary loads
    names = list(libraries)
    times: dict[str, list[float]] = defaultdict(list)
    for rnd in range(args.rounds):
        k = rnd % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            libraries[name](texts)
            times[name].append(time.perf_counter() - start)
    openai = libraries["OpenAI clip.tokenize"](texts)
    results["tokenizer"] = {
        name: {"rates": [len(texts) / s for s in times[name]],
               "mismatch": bench_tokenizer.mismatches(libraries[name](texts), openai)}
        for name in names
    }
    results["tokenizer_n"] = len(texts)


def run_imports(args: argparse.Namespace, results: dict) -> None:
    """Wall time of fresh interpreters doing one import (and `clipforge --help`), interleaved."""
    log("== import time")
    py = sys.executable
    cli = str(Path(py).parent / "clipforge")
    commands = {
        "python -c pass (interpreter start)": [py, "-c", "pass"],
        "import clipforge": [py, "-c", "import clipforge"],
        "clipforge --help": [cli, "--help"] if os.path.exists(cli) else [py, "-m", "clipforge.cli.main", "--help"],
        "import torch": [py, "-c", "import torch"],
        "import open_clip": [py, "-c", "import open_clip"],
        "import clip": [py, "-c", "import clip"],
        "from transformers import CLIPModel": [py, "-c", "from transformers import CLIPModel"],
    }
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    for cmd in commands.values():  # warm the file cache
        subprocess.run(cmd, capture_output=True, env=env)
    times: dict[str, list[float]] = defaultdict(list)
    names = list(commands)
    for rnd in range(max(5, args.rounds)):
        k = rnd % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            done = subprocess.run(commands[name], capture_output=True, env=env)
            times[name].append(time.perf_counter() - start)
            if done.returncode != 0:
                raise RuntimeError(f"{name} failed: {done.stderr.decode()[-2000:]}")
    results["imports"] = dict(times)


def run_rss(args: argparse.Namespace, weights_root: Path, results: dict) -> None:
    """Peak RSS of a fresh process per library: load ViT-B-32, encode 16 images and 64 captions (1 thread)."""
    log("== peak RSS (fresh process per library)")
    ctx = mp.get_context("spawn")
    paths = wl.prepare_weights("ViT-B-32", weights_root)
    image = Workload("rss image b16", "image", "ViT-B-32", 16, 1, ())
    text = Workload("rss text b64", "text", "ViT-B-32", 64, 1, ())
    tokens = make_tokens(wl.captions(64))
    rows = {}
    for name, variant in [("clipforge", "clipforge"), ("clipforge_int8", "clipforge int8"), ("onnxruntime", "onnxruntime"),
                          ("open_clip", "open_clip"), ("openai", "OpenAI clip"), ("transformers", "transformers")]:
        w = Worker(name, ctx)
        try:
            base = w.call("rss")
            w.call("put", f"tokens {text.key}", tokens)
            w.call("load", paths, False)
            loaded = w.call("rss")
            w.call("run", variant, image, 1, False)
            w.call("run", variant, text, 1, False)
            rows[variant] = {"start_mb": base, "after_load_mb": loaded, "peak_mb": w.call("rss")}
        finally:
            w.stop()
    results["rss"] = rows


# ---- report --------------------------------------------------------------------------------------


def max_abs(a: Any, b: Any) -> Optional[float]:
    if a is None or b is None:
        return None
    if isinstance(a, dict):
        return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return float((a - b).abs().max())


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min())


def image_gflops(arch: str, results: dict) -> float:
    """Per-image GFLOPs (2 x multiply-adds): from the shapes for ViTs, counted (FlopCounterMode) for RN50."""
    from clipforge.model_zoo import get_architecture

    cfg = get_architecture(wl.CLIPFORGE_ARCH[arch])
    v = cfg.vision
    if hasattr(v, "patch_size"):
        return wl.vit_image_flops(v.image_size, v.patch_size, v.width, v.layers, v.mlp_width, cfg.embed_dim) / 1e9
    return results["image_flops_counted"].get(arch, float("nan")) / 1e9


def summarize(results: dict, threads: list[int]) -> list[dict]:
    """One row per (workload, threads, variant): rates, paired ratios, output differences."""
    rows = []
    sgemm = {t: statistics.median(wl.SGEMM_N**3 * 2 / s / 1e9 for s in results["times"][(k, t, "clipforge")])
             for (k, t, v) in results["times"] if k.startswith("sgemm")}
    results["sgemm_gflops"] = sgemm
    for key, w in results["workloads"].items():
        for t in threads:
            times = {v: results["times"][(key, t, v)] for v in w.variants}
            if w.kind == "sgemm":
                rates = {v: [2 * wl.SGEMM_N**3 / s / 1e9 for s in ts] for v, ts in times.items()}
            else:
                rates = {v: [w.items / s for s in ts] for v, ts in times.items()}
            peers = [v for v in w.variants if VARIANTS[v].peer]
            best = max(peers, key=lambda v: statistics.median(rates[v])) if peers else None
            outs = {v: results["outputs"].get((key, t, v)) for v in w.variants}
            ref = outs.get(REFERENCE)
            for v in w.variants:
                row = {
                    "workload": key, "kind": w.kind, "arch": w.arch, "threads": t, "library": v, "unit": w.unit,
                    "median": statistics.median(rates[v]), "min": min(rates[v]), "max": max(rates[v]),
                    "best_peer": best, "notes": [],
                }
                if best:
                    paired = [a / b for a, b in zip(rates[v], rates[best])]
                    row.update(ratio=statistics.median(paired), ratio_min=min(paired), ratio_max=max(paired))
                if w.kind == "train":
                    if ref is not None and outs[v] is not None:
                        row["diff"] = max_abs(outs[v], ref)
                        row["notes"].append(f"loss {float(outs[v]['loss']):.5f} (|Δ| {abs(float(outs[v]['loss'] - ref['loss'])):.1e})")
                elif outs[v] is not None and ref is not None:
                    row["diff"] = max_abs(outs[v], ref)
                    row["ref_scale"] = float(ref.abs().max())
                    row["cos_min"] = min_cosine(outs[v], ref)
                if v == "clipforge draft" and outs.get("clipforge") is not None:
                    cos = torch.nn.functional.cosine_similarity(outs[v], outs["clipforge"], dim=-1)
                    row["cos_to_exact"] = float(cos.min())
                    row["notes"].append(f"cosine to exact path: min {float(cos.min()):.5f}, mean {float(cos.mean()):.5f}")
                if v == "onnxruntime" and outs.get("clipforge") is not None:
                    row["vs_clipforge_diff"] = max_abs(outs[v], outs["clipforge"])
                    row["notes"].append(f"max abs diff vs clipforge {row['vs_clipforge_diff']:.1e}")
                if v == "clipforge int8" and outs.get("clipforge") is not None:
                    row["cos_to_fp32"] = min_cosine(outs[v], outs["clipforge"])
                    row["notes"].append(f"cosine to fp32: min {min_cosine(outs[v], outs['clipforge']):.4f}")
                    paired = [a / b for a, b in zip(rates[v], rates["clipforge"])]
                    row["vs_fp32"] = statistics.median(paired)
                    row["notes"].append(f"{row['vs_fp32']:.2f}x fp32 clipforge (paired)")
                if w.kind == "image" and t in sgemm:
                    gf = image_gflops(w.arch, results)
                    row["gflops_per_s"] = row["median"] * gf
                    row["sgemm_pct"] = 100 * row["gflops_per_s"] / sgemm[t]
                    if v != "clipforge int8":  # int8 does not run fp32 GEMMs
                        row["notes"].append(f"{row['sgemm_pct']:.0f}% of SGEMM")
                rows.append(row)
    return rows


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 10 else f"{x:.2f}"


def fmt_diff(row: dict) -> str:
    if row["library"] == REFERENCE:
        return "reference"
    d = row.get("diff")
    if d is None:
        return "—"
    scale = row.get("ref_scale")
    exact = scale is None or d <= 1e-4 * max(scale, 1e-6)
    return f"{d:.1e}" if exact else f"**{d:.1e}** (changes numbers; cos ≥ {row.get('cos_min', float('nan')):.4f})"


def print_report(args: argparse.Namespace, results: dict, rows: list[dict]) -> None:
    out = []
    p = out.append
    m = results["machine"]
    p(f"\nMachine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, Python {m['python']}; "
      f"threads {args.threads}; {args.rounds} rounds{' (--quick)' if args.quick else ''}; "
      f"total {time.perf_counter() - T0:.0f} s\n")
    p("| workload | thr | library | median | min–max | paired ratio to best peer: median (min–max) | "
      "max abs diff vs open_clip | notes |")
    p("|---|---:|---|---:|---:|---:|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x ({r['ratio_min']:.2f}–{r['ratio_max']:.2f})" if "ratio" in r else "—"
        if r["library"] == r.get("best_peer"):
            ratio += " (best peer)"
        p(f"| {r['workload']} | {r['threads']} | {r['library']} | {fmt_rate(r['median'])} {r['unit']} | "
          f"{fmt_rate(r['min'])}–{fmt_rate(r['max'])} | {ratio} | {fmt_diff(r)} | {'; '.join(r['notes'])} |")

    if results.get("tokenizer"):
        tok = results["tokenizer"]
        fast = next(n for n in tok if "CLIPTokenizerFast" in n)
        p(f"\nTokenizer: {results['tokenizer_n']:,} Debian package descriptions, [N, 77] LongTensor out, "
          f"{args.rounds} interleaved rounds\n")
        p("| library | median captions/s | min–max | paired ratio clipforge / this | rows != OpenAI |")
        p("|---|---:|---:|---:|---:|")
        for name, d in tok.items():
            paired = [a / b for a, b in zip(tok["clipforge"]["rates"], d["rates"])]
            p(f"| {name} | {fmt_rate(statistics.median(d['rates']))} | {fmt_rate(min(d['rates']))}–"
              f"{fmt_rate(max(d['rates']))} | {statistics.median(paired):.2f}x ({min(paired):.2f}–{max(paired):.2f}) | "
              f"{d['mismatch']} |")
        results["tokenizer_vs_fast"] = statistics.median(
            a / b for a, b in zip(tok["clipforge"]["rates"], tok[fast]["rates"]))

    if results.get("imports"):
        p("\nImport time: fresh interpreter per run, wall seconds\n")
        p("| command | median s | min–max |")
        p("|---|---:|---:|")
        for name, ts in results["imports"].items():
            p(f"| `{name}` | {statistics.median(ts):.3f} | {min(ts):.3f}–{max(ts):.3f} |")

    if results.get("rss"):
        p("\nPeak RSS, fresh process per library: load ViT-B-32, encode 16 images + 64 captions, 1 thread (MB)\n")
        p("| library | at start (harness) | after load | peak |")
        p("|---|---:|---:|---:|")
        for name, d in results["rss"].items():
            p(f"| {name} | {d['start_mb']:,.0f} | {d['after_load_mb']:,.0f} | {d['peak_mb']:,.0f} |")
    if results.get("worker_peak_rss_mb"):
        p("\nPeak RSS of each benchmark worker over the whole run (MB): " + ", ".join(
            f"{n} {v:,.0f}" for n, v in results["worker_peak_rss_mb"].items()))

    if results.get("sgemm_gflops"):
        p("\nFLOPs per image (2 x multiply-adds): " + ", ".join(
            f"{a} {image_gflops(a, results):.2f} GFLOPs"
            for a in wl.CLIPFORGE_ARCH if any(r["arch"] == a and r["kind"] == "image" for r in rows))
            + " (ViT: from the shapes; RN50: counted by torch.utils.flop_counter). SGEMM ceiling: "
            + ", ".join(f"{t} thread(s) {g:,.0f} GFLOP/s" for t, g in results["sgemm_gflops"].items()))
    for key, d in results["inputs"].items():
        p(f"- inputs {key}: {d}")
    print("\n".join(out))


def print_targets(results: dict, rows: list[dict]) -> None:
    """The issue's targets against this run's figures (median paired ratios; every thread count)."""
    def pick(workload: str, library: str) -> list[dict]:
        return [r for r in rows if r["workload"].startswith(workload) and r["library"] == library]

    def ratios(rs: list[dict], key: str = "ratio") -> str:
        return ", ".join(f"{r['workload'].split(' ', 1)[-1] if r['kind'] == 'image' else r['workload']} "
                         f"{r['threads']}t {r[key]:.2f}x" for r in rs if key in r)

    def met(rs: list[dict], bound: float, key: str = "ratio") -> str:
        vals = [r[key] for r in rs if key in r]
        if not vals:
            return "not measured"
        return "met" if min(vals) >= bound else "met in part" if max(vals) >= bound else "missed"

    out = ["\nTargets (paired median ratios from the table above)\n", "| target | this run | status |", "|---|---|---|"]
    text = pick("text", "clipforge")
    diffs = max((r.get("diff") or 0) for r in text) if text else float("nan")
    out.append(f"| text tower >= 2x best peer, identical pooled embeddings | {ratios(text)}; max abs diff {diffs:.1e} | "
               f"{met(text, 2.0)} |")
    img = pick("image ViT", "clipforge")
    pct = ", ".join(f"{r['workload'].split(' ', 1)[1]} {r['threads']}t {r['sgemm_pct']:.0f}%" for r in img if "sgemm_pct" in r)
    out.append(f"| image tower >= 1.0x | {ratios(img)}; of SGEMM: {pct or 'n/a'} | {met(img, 0.995)} |")
    rn = pick("image RN50", "clipforge")
    out.append(f"| RN50 >= 1.05x | {ratios(rn)} | {met(rn, 1.05)} |")
    e2e, draft = pick("end-to-end", "clipforge"), pick("end-to-end", "clipforge draft")
    out.append(f"| end-to-end >= 1.5x open_clip DataLoader, identical outputs | {ratios(e2e)}; max abs diff "
               f"{max((r.get('diff') or 0) for r in e2e) if e2e else float('nan'):.1e} | {met(e2e, 1.5)} |")
    cos = min((r.get("cos_to_exact", 1.0) for r in draft), default=float("nan"))
    out.append(f"| draft >= 2.5x, cosine >= 0.999 | {ratios(draft)}; min cosine to exact {cos:.5f} | {met(draft, 2.5)} |")
    if results.get("tokenizer_vs_fast"):
        x = results["tokenizer_vs_fast"]
        out.append(f"| tokenizer >= 3x CLIPTokenizerFast | {x:.1f}x | {'met' if x >= 3 else 'missed'} |")
    q = pick("image ViT-B-32", "clipforge int8") + pick("text", "clipforge int8")
    qcos = min((r.get("cos_to_fp32", 1.0) for r in q), default=float("nan"))
    out.append(f"| int8 >= 1.8x fp32, both towers | {ratios(q, 'vs_fp32')}; min cosine to fp32 {qcos:.4f} | "
               f"{met(q, 1.8, 'vs_fp32')} |")
    ort = [r for r in rows if r["library"] == "onnxruntime" and "vs_clipforge_diff" in r]
    odiff = max((r["vs_clipforge_diff"] for r in ort), default=float("nan"))
    out.append(f"| ONNX parity <= 1e-4 | max abs diff vs clipforge {odiff:.1e} (onnxruntime) | "
               f"{'met' if odiff <= 1e-4 else 'missed'} |")
    if results.get("rss"):
        a, b = results["rss"]["clipforge"]["peak_mb"], results["rss"]["open_clip"]["peak_mb"]
        out.append(f"| peak RSS <= open_clip | {a:,.0f} MB vs {b:,.0f} MB | {'met' if a <= b else 'missed'} |")
    if results.get("imports"):
        h = statistics.median(results["imports"]["clipforge --help"])
        out.append(f"| `clipforge --help` < 0.5 s | {h:.3f} s | {'met' if h < 0.5 else 'missed'} |")
    print("\n".join(out))


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import open_clip
    import transformers

    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "open_clip": open_clip.__version__, "transformers": transformers.__version__,
            "load_avg_start": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="RN50 and ViT-B-16 at batch 16 only")
    parser.add_argument("--parts", nargs="+", default=["models", "tokenizer", "imports", "rss"],
                        choices=["models", "tokenizer", "imports", "rss"])
    parser.add_argument("--groups", nargs="+", help="only these model groups (e.g. 'RN50 inference')")
    parser.add_argument("--only", nargs="+", help="only workloads whose name contains one of these strings")
    parser.add_argument("--cache", type=Path, help="keep the generated weights here (reused by later runs)")
    parser.add_argument("--json", type=Path, help="write raw timings and rows here")
    args = parser.parse_args()

    weights_root = args.cache or Path(tempfile.mkdtemp(prefix="clipforge-bench-weights-"))
    weights_root.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "machine": machine(), "times": defaultdict(list), "outputs": {}, "load": {}, "workloads": {},
        "image_flops_counted": {}, "inputs": {}, "worker_peak_rss_mb": {},
    }
    groups = [g for g in wl.plan(args.quick) if not args.groups or g.name in args.groups]
    for g in groups:
        g.workloads = [w for w in g.workloads if not args.only or any(s in w.key for s in args.only)]
    groups = [g for g in groups if g.workloads]
    try:
        if "models" in args.parts:
            run_groups(args, groups, weights_root, results)
        if "tokenizer" in args.parts:
            run_tokenizer(args, results)
        if "imports" in args.parts:
            run_imports(args, results)
        if "rss" in args.parts:
            run_rss(args, weights_root, results)
    finally:
        if args.cache is None:
            shutil.rmtree(weights_root, ignore_errors=True)
    rows = summarize(results, args.threads)
    results["machine"]["load_avg_end"] = os.getloadavg()
    print_report(args, results, rows)
    print_targets(results, rows)
    if args.json:
        raw = {
            "args": {k: str(v) for k, v in vars(args).items()}, "machine": results["machine"], "rows": rows,
            "times": {" | ".join(map(str, k)): v for k, v in results["times"].items()},
            "tokenizer": results.get("tokenizer"), "imports": results.get("imports"), "rss": results.get("rss"),
            "sgemm_gflops": results.get("sgemm_gflops"), "inputs": results["inputs"], "load": results["load"],
            "worker_peak_rss_mb": results["worker_peak_rss_mb"],
        }
        args.json.write_text(json.dumps(raw, indent=1, default=str))


if __name__ == "__main__":
    main()
