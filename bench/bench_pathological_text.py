"""Tokenizer time on 1 MB of pathological text (docs/security.md's table).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_pathological_text.py [--mb 1] [--rounds 3]

For each input of tests/pathological_text.py: ms for `Tokenizer()(text)` (truncating to 77, what
CLIP uses), for `Tokenizer().encode(text)` (all ids), and for ftfy's clean-up alone (the part a
non-ASCII single-line text cannot avoid). Best of --rounds (full encodes of the slowest inputs: one).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from pathological_text import KINDS, pathological  # noqa: E402

from clipforge.text import Tokenizer, normalize  # noqa: E402


def best_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tok = Tokenizer()
    tok("warm up the vocabulary")
    print(f"| input ({args.mb:g} MB) | tokenize (truncating) ms | encode (all ids) ms | ftfy clean-up ms |")
    print("|---|---:|---:|---:|")
    for kind in KINDS:
        text = pathological(kind, int(args.mb * 1_000_000))
        call = best_ms(lambda: tok(text), args.rounds)
        slow = kind in ("no_spaces", "latin1_bytes", "emoji_run")
        encode = best_ms(lambda: tok.encode(text), 1 if slow else args.rounds)
        clean = 0.0 if normalize.is_plain(text) else best_ms(lambda: normalize.clean(text), 1)
        print(f"| {kind} | {call:,.0f} | {encode:,.0f} | {clean:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
