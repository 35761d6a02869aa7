"""Pathological text for the tokenizer: a megabyte with no space, one character a million times,
random CJK, runs of combining marks, random bytes read as Latin-1.

Truncating tokenization (what CLIP uses) merges only a bounded prefix of a long word, cut at a
synchronisation point that the whole word's encoding provably has (bpe.BytePairVocab.sync_point);
these tests check the ids against the plain merge loop over the whole word, against OpenAI's
SimpleTokenizer where it can finish, and that the work stays bounded. docs/security.md lists the
inputs with their measured times.
"""

from __future__ import annotations

import random
import time
import warnings

import pytest
import torch
from pathological_text import KINDS, pathological

from clipforge.text import Tokenizer, bpe
from clipforge.text import tokenizer as tokenizer_module

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import clip  # clip-anytorch: OpenAI's tokenizer
    from clip.simple_tokenizer import SimpleTokenizer

SOT, EOT = 49406, 49407


def _reference_ids(text: str, monkeypatch) -> list[int]:
    """All ids of ``text`` with the plain merge loop over every whole word (no synchronisation points)."""
    with monkeypatch.context() as m:
        m.setattr(bpe, "_LONG_WORD_BYTES", 1 << 62)
        m.setattr(bpe, "_MEMO_WORD_BYTES", 1 << 62)
        m.setattr(tokenizer_module, "_LONG_WORD_CHARS", 1 << 62)
        return Tokenizer().encode(text)


# ------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_and_full_ids_equal_the_plain_merge_loop(kind, monkeypatch):
    text = pathological(kind, 200_000)
    want = _reference_ids(text, monkeypatch)
    tok = Tokenizer()
    assert tok.encode(text) == want
    assert tok.encode(text, max_tokens=300) == want[:300]
    row = tok(text)[0].tolist()
    assert row == [SOT] + want[:75] + [EOT]


@pytest.mark.parametrize("chunk", [3, 40, 512])
def test_long_word_paths_equal_the_merge_loop_on_random_words(chunk, monkeypatch):
    # Small alphabets make long tokens and ambiguous merges likely; a tiny chunk size puts a
    # synchronisation point every few bytes, so thousands of them are checked.
    monkeypatch.setattr(bpe, "_LONG_WORD_BYTES", 64)
    monkeypatch.setattr(bpe, "_MEMO_WORD_BYTES", 64)
    monkeypatch.setattr(bpe, "_SYNC_CHUNK_BYTES", chunk)
    monkeypatch.setattr(bpe, "_SYNC_MISSES", 10**9)  # never fall back: every chunk through a sync point
    vocab = bpe.load_vocab()
    rng = random.Random(chunk)
    alphabets = ["abcdefghijklmnopqrstuvwxyz", "ab", "aab", "abc", "ing", "aeiou", "!.?'", "éèa", "漢字かな",
                 "😀👍🏽", "xyz0", "\u0301e", "ei", "an"]
    checked = 0
    for _ in range(120):
        letters = rng.choice(alphabets)
        word = "".join(rng.choice(letters) for _ in range(rng.randrange(70, 1500)))
        want = vocab._merge_word(word.encode())
        assert list(vocab.bpe(word)) == want, word[:60]
        for k in (1, 7, 75, len(want)):
            assert list(vocab.bpe_prefix(word, k)) == want[:k], (word[:60], k)
        checked += len(word)
    assert checked > 50_000


def test_sync_points_are_boundaries_of_the_whole_encoding():
    # The property itself: every q returned is a token boundary of the whole word's encoding and
    # the tokens before it are that encoding's.
    vocab = bpe.load_vocab()
    rng = random.Random(7)
    for letters in ("abcdefghijklmnopqrstuvwxyz", "aab", "éa", "漢字"):
        data = "".join(rng.choice(letters) for _ in range(3000)).encode()
        full = vocab._merge_word(data)
        bounds, pos = {0: 0}, 0
        for i, t in enumerate(full):
            pos += vocab.token_lengths[t]
            bounds[pos] = i + 1
        start, found_any = 0, 0
        for size in (1, 2, 5, 17, 64, 200, 64, 5, 2, 1) * 4:
            found = vocab.sync_point(data, start, size)
            while found is None:  # no common boundary in this window: bpe_prefix looks further
                size *= 2
                found = vocab.sync_point(data, start, size)
            q, tokens = found
            assert start < q <= start + size and q in bounds
            assert tokens == full[bounds[start] : bounds[q]]
            start, found_any = q, found_any + 1
        assert found_any == 40


@pytest.mark.parametrize("kind,n_bytes", [
    ("no_spaces", 4_000), ("one_character", 50_000), ("random_cjk", 20_000), ("combining_marks", 20_000),
    ("latin1_bytes", 30_000), ("emoji_run", 20_000),
])
def test_equals_openai_where_openai_finishes(kind, n_bytes):
    # OpenAI's merge loop is quadratic: 20 KB of random letters takes it ~13 s, so those are 4 KB.
    text = pathological(kind, n_bytes, seed=1)
    ref = SimpleTokenizer()
    want = ref.encode(text)
    tok = Tokenizer(special_tokens="openai")
    assert tok.encode(text) == want
    assert torch.equal(tok(text), clip.tokenize(text, truncate=True))
    assert tok.encode(text, max_tokens=100) == want[:100]


def test_encode_max_tokens():
    tok = Tokenizer()
    text = "a photo of a cat " * 10_000 + pathological("no_spaces", 100_000)
    full = tok.encode(text)
    for n in (0, 1, 75, 40_000, 50_000, 10**9):
        assert tok.encode(text, max_tokens=n) == full[:n]
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError):
            tok.encode("a", max_tokens=bad)


# ------------------------------------------------------------------------------------ bounded work


def _count_merged_bytes(monkeypatch) -> dict[str, int]:
    vocab = bpe.load_vocab()
    seen = {"bytes": 0}
    real = vocab._merge_symbols

    def counting(symbols):
        seen["bytes"] += len(symbols)
        return real(symbols)

    monkeypatch.setattr(vocab, "_merge_symbols", counting)
    return seen


@pytest.mark.parametrize("kind", ["no_spaces", "one_character", "random_cjk", "combining_marks", "emoji_run"])
def test_truncating_a_megabyte_long_word_merges_a_bounded_prefix(kind, monkeypatch):
    tok = Tokenizer()
    seen = _count_merged_bytes(monkeypatch)
    merged = []
    for megabytes in (1, 2):
        seen["bytes"] = 0
        tok(pathological(kind, megabytes * 1_000_000))
        merged.append(seen["bytes"])
    assert merged[0] == merged[1] and merged[0] < 100_000, merged  # ~a few KB, whatever the length
    assert tok.encode(pathological(kind, 1_000_000), max_tokens=75) == tok(pathological(kind, 1_000_000))[0, 1:76].tolist()


@pytest.mark.parametrize("kind", ["no_spaces", "one_character", "emoji_run"])
def test_truncating_a_megabyte_is_fast(kind):
    # The goal is 50 ms per MB (docs/security.md has the figures); the bound is loose for busy machines.
    tok = Tokenizer()
    text = pathological(kind, 1_000_000)
    tok(text[:10_000])  # warm the vocabulary
    start = time.perf_counter()
    tok(text)
    assert time.perf_counter() - start < 1.0


def test_a_repeated_character_megabyte_encodes_fully_and_fast(monkeypatch):
    tok = Tokenizer()
    seen = _count_merged_bytes(monkeypatch)
    text = pathological("one_character", 1_000_000)
    start = time.perf_counter()
    ids = tok.encode(text)
    assert time.perf_counter() - start < 1.0
    assert seen["bytes"] < 100_000, seen  # chunks come from the memo, not the merge loop
    assert ids == _reference_ids(text, monkeypatch)


def test_a_batch_of_long_space_free_lines_truncates_fast_and_exactly(monkeypatch):
    # Texts under the long-text threshold go through the batched path: its long chunks are merged
    # only as far as truncation needs, and never cached with fewer ids than they have.
    texts = [pathological("no_spaces", 4_000, seed=i) + " and a cat." for i in range(100)]
    tok = Tokenizer()
    seen = _count_merged_bytes(monkeypatch)
    got = tok(texts)
    assert seen["bytes"] < 100 * 2_500, seen
    monkeypatch.undo()
    want = torch.tensor([[SOT] + _reference_ids(t, monkeypatch)[:75] + [EOT] for t in texts])
    assert torch.equal(got, want)
    # The same chunks untruncated (truncate=False counts every id) are not served from the cache.
    with pytest.raises(ValueError, match=f"has {len(_reference_ids(texts[0], monkeypatch)) + 2} tokens"):
        Tokenizer(truncate=False)(texts[:1])
    assert torch.equal(Tokenizer(context_length=2)(texts[:3]), torch.tensor([[SOT, EOT]] * 3))
