"""Tokenizer throughput: clipforge against OpenAI, open_clip and transformers, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_tokenizer.py [--rounds 7] [--n 10000]

Two workloads: (a) realistic captions (tests/tokenizer_corpus.py; the same 10,000 each round,
so word caches help every library as they would in practice) and (b) long-tail texts made mostly
of invented words, a fresh set each round so no cache has seen them. Every library produces the
same thing: a [N, 77] LongTensor of ids. Rounds are interleaved (all libraries once per round, in
a rotating order) so background load hits everyone alike. Ids are compared with OpenAI's
``clip.tokenize(truncate=True)``; transformers pads with 49407 and is compared after mapping the
padding back to 0. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from tokenizer_corpus import long_tail_texts, realistic_captions  # noqa: E402

from clipforge.text import Tokenizer, bpe  # noqa: E402

EOT = 49407


def load_libraries() -> dict[str, object]:
    """name -> function(list of str) -> LongTensor [N, 77]."""
    parallelism = os.environ.get("TOKENIZERS_PARALLELISM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip
        import open_clip
        import transformers
        from transformers import CLIPTokenizer, CLIPTokenizerFast
    # open_clip sets TOKENIZERS_PARALLELISM=false on import; give transformers its default back.
    if parallelism is None:
        os.environ.pop("TOKENIZERS_PARALLELISM", None)
    else:
        os.environ["TOKENIZERS_PARALLELISM"] = parallelism

    # transformers is offline here: build its tokenizers from the same vocabulary file.
    vocab = bpe.load_vocab()
    lines = gzip.decompress((Path(bpe.__file__).parent / bpe.VOCAB_FILE).read_bytes()).decode().split("\n")
    merges = [tuple(t.split()) for t in lines[1 : bpe.N_MERGES + 1]]
    hf_slow = CLIPTokenizer(vocab=vocab.encoder, merges=merges)
    hf_fast = CLIPTokenizerFast(vocab=vocab.encoder, merges=merges)
    rust = hf_fast.backend_tokenizer
    rust.enable_truncation(77)
    rust.enable_padding(length=77, pad_id=EOT)

    def hf(tok):
        return lambda texts: tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")[
            "input_ids"
        ]

    def rust_batch(texts):
        return torch.from_numpy(np.array([e.ids for e in rust.encode_batch(texts)], dtype=np.int64))

    def rust_one_thread(texts):
        # tokenizers reads this variable on every batch; open_clip sets it to "false" on import.
        before = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        try:
            return rust_batch(texts)
        finally:
            if before is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = before

    same = " (same class)" if CLIPTokenizer is CLIPTokenizerFast else ""
    tv = transformers.__version__
    ours = Tokenizer()
    return {
        "clipforge": ours,
        "OpenAI clip.tokenize": lambda texts: clip.tokenize(texts, truncate=True),
        "open_clip.tokenize": open_clip.tokenize,
        f"transformers {tv} CLIPTokenizerFast{same}": hf(hf_fast),
        f"transformers {tv} CLIPTokenizer{same}": hf(hf_slow),
        "tokenizers (Rust core) encode_batch": rust_batch,
        "tokenizers (Rust core) encode_batch, 1 thread": rust_one_thread,
    }


def mismatches(ids: torch.Tensor, openai: torch.Tensor) -> int:
    """Rows that differ from OpenAI's, with end-token padding read as 0 padding."""
    after_end = (ids == EOT).long().cumsum(1) > 1
    ids = ids.masked_fill(after_end & (ids == EOT), 0)
    return int((ids != openai).any(1).sum())


def run(rounds: int, n: int) -> list[dict]:
    libraries = load_libraries()
    captions = realistic_captions(n)
    workloads = {
        "captions": lambda r: captions,
        "long tail": lambda r: long_tail_texts(n, seed=1000 + r),
    }
    # Warm up once (imports, lazy vocabulary loads) on other texts, outside the timing.
    for fn in libraries.values():
        fn(realistic_captions(200, seed=7))

    times = {(w, name): [] for w in workloads for name in libraries}
    names = list(libraries)
    for r in range(rounds):
        for w, make in workloads.items():
            texts = make(r)
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                start = time.perf_counter()
                out = libraries[name](texts)
                times[(w, name)].append(time.perf_counter() - start)
                assert out.shape == (len(texts), 77)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)

    rows = []
    for w, make in workloads.items():
        texts = make(0)
        openai = libraries["OpenAI clip.tokenize"](texts)
        rates = {name: [len(texts) / t for t in times[(w, name)]] for name in names}
        best_peer = max(statistics.median(rates[name]) for name in names if name != "clipforge")
        for name in names:
            med = statistics.median(rates[name])
            rows.append({
                "workload": w, "library": name, "median": med, "min": min(rates[name]), "max": max(rates[name]),
                "ratio": med / best_peer, "mismatch": mismatches(libraries[name](texts), openai), "n": len(texts),
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=10_000, help="texts per workload")
    args = parser.parse_args()
    rows = run(args.rounds, args.n)
    print(f"\n{args.rounds} interleaved rounds of {args.n} texts; Python {platform.python_version()}, "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', '(unset: Rust uses all cores)')}\n")
    print("| workload | library | median texts/s | min | max | median / best peer | rows != OpenAI |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workload']} | {r['library']} | {r['median']:,.0f} | {r['min']:,.0f} | {r['max']:,.0f} | "
              f"{r['ratio']:.2f}x | {r['mismatch']} / {r['n']} |")


if __name__ == "__main__":
    main()
