"""Pathological text for the tokenizer, generated deterministically (tests and bench share it)."""

from __future__ import annotations

import random

KINDS = ["no_spaces", "one_character", "random_cjk", "combining_marks", "latin1_bytes", "emoji_run"]


def pathological(kind: str, n_bytes: int, seed: int = 0) -> str:
    """About n_bytes of UTF-8 of one pathological kind."""
    rng = random.Random(seed)
    if kind == "no_spaces":  # one "word" of random a-z
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n_bytes))
    if kind == "one_character":
        return "a" * n_bytes
    if kind == "random_cjk":  # CJK unified ideographs: one "word" of 3-byte characters
        return "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(n_bytes // 3))
    if kind == "combining_marks":  # e + combining acute accents
        return "e" + "\u0301" * (n_bytes // 2 - 1)
    if kind == "latin1_bytes":  # random bytes decoded as Latin-1: controls, entities, mojibake
        return bytes(rng.randrange(256) for _ in range(n_bytes)).decode("latin-1")
    if kind == "emoji_run":  # 4-byte emoji and flags, the longest tokens in the vocabulary
        return "".join(rng.choice("😂😍🇺🇸👍🏽") for _ in range(n_bytes // 4))
    raise ValueError(f"unknown kind {kind!r}")
