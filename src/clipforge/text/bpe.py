"""Byte-level byte-pair encoding over OpenAI CLIP's merge list.

The vocabulary file (``bpe_simple_vocab_16e6.txt.gz``, MIT licence, OpenAI) holds one merge per
line. CLIP uses the first 48,894 of them; the id layout is

    0..255        the 256 bytes, each as one printable stand-in character (mid-word)
    256..511      the same 256 bytes with "</w>" attached (last symbol of a word)
    512..49405    merge number r produces id 512 + r
    49406, 49407  <|startoftext|>, <|endoftext|>

Symbols are handled as integer ids throughout: a merge of ids (a, b) is looked up by the key
``a << 16 | b`` and yields the merged id. Because merged ids grow with the merge's rank, "lowest
rank first" is simply "smallest merged id first".

Long words (a megabyte with no space in it) are cut at *synchronisation points*: positions that are
provably token boundaries of the whole word's encoding, found from a bounded window of bytes (see
``BytePairVocab.sync_point``). So the first 75 tokens of a megabyte-long word cost about as much as
those of a kilobyte, and repetitive long words (one character a million times) are encoded chunk by
chunk from a memo; anything else falls back to the O(n log n) merge loop over the whole word.
"""

from __future__ import annotations

import gzip
import heapq
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # CLIP's vocabulary: 512 byte symbols + 48,894 merges + 2 specials
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
END_OF_WORD = "</w>"

# Words up to this many bytes use the simple merge loop (quadratic, but in C for short lists);
# longer ones the bucketed one, which stays near-linear for a megabyte-long "word" (and is already
# faster from about 64 bytes on).
_SHORT_WORD_BYTES = 64
_NO_MERGE = 1 << 30
# Words longer than this are truncated through synchronisation points (bpe_prefix) ...
_LONG_WORD_BYTES = 2048
# ... and words longer than this are encoded through the memo of repeated chunks (bpe), where
# the two synchronisation points tried on a word that does not repeat cost under 5%.
_MEMO_WORD_BYTES = 65536
# Bytes per chunk when a long word is encoded through synchronisation points, and how many chunks
# may miss the memo before the rest of the word goes to the merge loop in one piece.
_SYNC_CHUNK_BYTES = 512
_SYNC_MISSES = 2


def byte_order() -> list[int]:
    """byte_order()[i] is the byte value that vocabulary id i (and i + 256) stands for."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    return printable + sorted(set(range(256)) - set(printable))


def byte_symbols() -> list[str]:
    """The 256 stand-in characters in vocabulary order (index i is id i).

    The 188 printable Latin-1 bytes stand for themselves; the other 68 (space, controls, ...)
    are moved to U+0100 and up, so every symbol is a visible, non-space character.
    """
    order = byte_order()
    n_printable = 188
    return [chr(b) if i < n_printable else chr(256 + i - n_printable) for i, b in enumerate(order)]


class BoundedCache(dict):
    """A dict that empties itself (keeping its fixed entries) when an update would overflow it.

    Why: a long-running service sees an unbounded number of distinct words (OpenAI's cache grows
    forever). Starting over at the limit is crude, but lookups stay plain C-level dict lookups.
    """

    def __init__(self, max_entries: int, fixed: dict[str, tuple[int, ...]] | None = None) -> None:
        super().__init__(fixed or {})
        self.max_entries = max_entries
        self.fixed = dict(fixed or {})

    def add(self, new: dict[str, tuple[int, ...]]) -> None:
        if len(self) + len(new) > self.max_entries:
            self.clear()
            self.update(self.fixed)
        self.update(new)

    def put(self, key: str, value: tuple[int, ...]) -> None:
        if len(self) >= self.max_entries:
            self.clear()
            self.update(self.fixed)
        self[key] = value


@dataclass(eq=False)
class BytePairVocab:
    """The loaded vocabulary plus a bounded word -> ids cache shared by all tokenizers."""

    tokens: list[str]  # id -> token string (byte stand-ins, maybe ending in "</w>")
    encoder: dict[str, int]
    merges: dict[int, int]  # (a << 16 | b) -> merged id
    byte_id: list[int]  # byte value -> id of that byte mid-word
    byte_id_end: list[int]  # byte value -> id of that byte as the last symbol of a word
    byte_id_table: bytes  # byte_id as a bytes.translate table
    byte_pair_merges: list[int]  # (a << 8 | b) -> merged id for two mid-word byte ids, or _NO_MERGE
    token_bytes: list[bytes]  # id -> the bytes it spells, "</w>" as a space
    cache: BoundedCache = field(default_factory=lambda: BoundedCache(100_000))
    max_cached_word_chars: int = 64

    @property
    def sot_id(self) -> int:
        return self.encoder[START_OF_TEXT]

    @property
    def eot_id(self) -> int:
        return self.encoder[END_OF_TEXT]

    def word_ids(self, word: str) -> tuple[int, ...]:
        """BPE ids of one pre-tokenized (already cleaned and lower-cased) word, cached."""
        ids = self.cache.get(word)
        if ids is None:
            ids = self.bpe(word)
            if len(word) <= self.max_cached_word_chars:
                self.cache.put(word, ids)
        return ids

    def bpe(self, word: str) -> tuple[int, ...]:
        """Merge the bytes of ``word`` exactly as OpenAI's ``SimpleTokenizer.bpe`` does."""
        data = word.encode("utf-8", "surrogatepass")  # surrogates never get here; never crash
        if len(data) > _MEMO_WORD_BYTES:
            return tuple(self._bpe_long(data))
        return tuple(self._merge_word(data))

    def bpe_prefix(self, word: str, n_tokens: int) -> tuple[int, ...]:
        """``bpe(word)[:n_tokens]``, with work proportional to the bytes those tokens span.

        Exact: the tokens returned end at a synchronisation point, which the whole word's encoding
        provably has as a boundary (see ``sync_point``); the rest of the word is never merged.
        """
        if n_tokens <= 0:
            return ()
        data = word.encode("utf-8", "surrogatepass")
        if len(data) <= _LONG_WORD_BYTES:
            return self.word_ids(word)[:n_tokens]
        out: list[int] = []
        start = 0
        size = 2 * n_tokens + 32  # bytes; random letters take ~1.8 per token, long runs more
        while len(out) < n_tokens:
            found = self.sync_point(data, start, size)
            if found is None:
                if start + size + 3 * self.max_token_bytes >= len(data):
                    out.extend(self._merge_word(data[start:]))  # near the end: the rest at once
                    break
                size *= 2  # no common boundary in this window (rare): look further
                continue
            start, tokens = found
            out.extend(tokens)
            # The rest, at the bytes per token seen so far (and a margin).
            size = (n_tokens - len(out)) * (start // max(len(out), 1) + 1) + 32
        return tuple(out[:n_tokens])

    def sync_point(self, data: bytes, start: int, size: int) -> tuple[int, list[int]] | None:
        """A synchronisation point after ``start`` and the tokens up to it, or None.

        Given that ``start`` is a token boundary of the encoding of the whole word ``data`` (0 is),
        returns ``(q, tokens)`` with ``start < q <= start + size`` such that q is one too and
        ``tokens`` are that encoding's tokens between ``start`` and ``q``. Only
        ``data[start : start + size + 2 * max_token_bytes]`` is read.

        Why it is exact. BPE (lowest rank first, leftmost first) has two properties (proved in
        github/rust-gems, crates/bpe: "Corollary II", and the uniqueness of the encoding): the tokens
        of an encoding up to any of its boundaries are the encoding of that prefix alone, and the
        encoding is determined by the text. Let e = start + size and let w be the length of the
        longest vocabulary token that occurs in the text overlapping [e, e + w) (found by scanning
        ``data[e - L : e + 2L]`` for L = the longest token). Going back from the end of the word,
        the boundaries of the word's encoding move at most one token at a time, and no token
        that overlaps the window is longer than the window, so one boundary p lies in
        [e, e + w); the encoding up to p is then the encoding of ``data[start:p]``. Every such
        prefix encoding is computed here; a position q that is a boundary of all of them is a
        boundary of the whole word's encoding, whichever p it is, with the same tokens before it.
        tests/test_tokenizer_hardening.py checks the result against the plain merge loop.
        """
        L = self.max_token_bytes
        e = start + size
        if e + 2 * L >= len(data):  # the window must not reach the word's last (end-of-word) token
            return None
        w = self._longest_token_near(data, e)
        table, lengths = self.byte_id_table, self.token_lengths
        common: set[int] | None = None
        first: list[int] = []
        for p in range(e, e + w):
            tokens = self._merge_symbols(list(data[start:p].translate(table)))
            pos, bounds = start, set()
            for t in tokens:
                pos += lengths[t]
                bounds.add(pos)
            common = bounds if common is None else common & bounds
            if p == e:
                first = tokens
            if not common:
                return None
        q = max(common)
        n, pos = 0, start
        while pos < q:
            pos += lengths[first[n]]
            n += 1
        return q, first[:n]

    def _longest_token_near(self, data: bytes, e: int) -> int:
        """Length of the longest vocabulary token occurring in ``data[e - L : e + 2L]``."""
        L = self.max_token_bytes
        region = data[max(e - L, 0) : e + 2 * L]
        tokens, longest_from = self.mid_word_tokens, self.longest_token_from_pair
        best = 1
        for j in range(len(region) - 1):
            n = min(longest_from[region[j] << 8 | region[j + 1]], len(region) - j)
            while n > best:
                if region[j : j + n] in tokens:
                    best = n
                    break
                n -= 1
        return best

    def _bpe_long(self, data: bytes) -> list[int]:
        """The encoding of a long word: chunk by chunk through synchronisation points while the
        chunks repeat (a memo keyed by every byte ``sync_point`` reads, so exact), then the rest
        of the word in one merge loop."""
        L = self.max_token_bytes
        memo: dict[bytes, tuple[int, list[int]]] = {}
        out: list[int] = []
        start, misses = 0, 0
        span = _SYNC_CHUNK_BYTES + 2 * L
        while start + span < len(data):
            key = data[start : start + span]
            hit = memo.get(key)
            if hit is None:
                if misses == _SYNC_MISSES:
                    break
                misses += 1
                found = self.sync_point(data, start, _SYNC_CHUNK_BYTES)
                if found is None:
                    break
                hit = memo[key] = (found[0] - start, found[1])
            out.extend(hit[1])
            start += hit[0]
        out.extend(self._merge_word(data[start:]))
        return out

    def _merge_word(self, data: bytes) -> list[int]:
        """The merge loop over a whole word (its last byte as the end of the word)."""
        symbols = list(data[:-1].translate(self.byte_id_table))  # mid-word byte ids are < 256
        symbols.append(self.byte_id_end[data[-1]])
        return self._merge_symbols(symbols)

    def _merge_symbols(self, symbols: list[int]) -> list[int]:
        if len(symbols) <= _SHORT_WORD_BYTES:
            return _merge_rounds(symbols, self.merges, self.byte_pair_merges)
        return _merge_buckets(symbols, self.merges)

    @cached_property
    def token_lengths(self) -> list[int]:
        """id -> how many bytes of the text it spans ("</w>" spans none)."""
        return [len(b) - (t.endswith(END_OF_WORD)) for b, t in zip(self.token_bytes, self.tokens)]

    @cached_property
    def mid_word_tokens(self) -> frozenset[bytes]:
        """The bytes of every token that can stand inside a word (not ending in "</w>")."""
        return frozenset(b for b, t in zip(self.token_bytes[:-2], self.tokens) if not t.endswith(END_OF_WORD))

    @cached_property
    def max_token_bytes(self) -> int:
        return max(self.token_lengths[:-2])

    @cached_property
    def longest_token_from_pair(self) -> list[int]:
        """(first byte << 8 | second byte) -> length of the longest token that starts with them (0: none)."""
        out = [0] * 65536
        for b in self.mid_word_tokens:
            if len(b) > 1:
                key = b[0] << 8 | b[1]
                out[key] = max(out[key], len(b))
        return out

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.token_bytes[i] for i in ids)


def _merge_rounds(symbols: list[int], merges: dict[int, int], byte_pairs: list[int]) -> list[int]:
    """Merge the lowest-rank adjacent pair, leftmost first, until no pair is a known merge.

    OpenAI merges every occurrence of the best pair per round; one occurrence at a time gives
    the same result because a pair that contains a freshly merged symbol always ranks after the
    merge that made it (checked when the vocabulary is loaded), so the remaining occurrences of
    the current pair stay the best pairs until they are all merged.
    """
    get = merges.get
    # Pairs of two mid-word bytes come from a flat table; the last pair ends the word.
    ranks = [byte_pairs[a << 8 | b] for a, b in zip(symbols, symbols[1:-1])]
    if len(symbols) > 1:
        ranks.append(get(symbols[-2] << 16 | symbols[-1], _NO_MERGE))
    n = len(ranks)
    while n:
        best = min(ranks)  # min() and index() run in C; the lists are short
        if best == _NO_MERGE:
            break
        i = ranks.index(best)
        symbols[i] = best
        del symbols[i + 1]
        del ranks[i]
        n -= 1
        if i:
            ranks[i - 1] = get(symbols[i - 1] << 16 | best, _NO_MERGE)
        if i < n:
            ranks[i] = get(best << 16 | symbols[i + 1], _NO_MERGE)
    return symbols


def _merge_buckets(symbols: list[int], merges: dict[int, int]) -> list[int]:
    """Same result as _merge_rounds in about O(n log n), for long words.

    This is OpenAI's round structure made cheap: each pair's position goes into the bucket of
    its rank, and ranks are taken smallest first. A round merges its bucket's still-valid
    positions left to right (so "a a a" -> "aa a"); it only creates pairs of higher rank, so
    every bucket is complete by the time its turn comes.
    """
    n = len(symbols)
    sym = symbols
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    get = merges.get
    buckets: dict[int, list[int]] = {}

    def add(rank: int, pos: int) -> None:
        bucket = buckets.get(rank)
        if bucket is None:
            buckets[rank] = [pos]
            heapq.heappush(order, rank)
        else:
            bucket.append(pos)

    order: list[int] = []
    for i in range(n - 1):
        rank = get(sym[i] << 16 | sym[i + 1])
        if rank is not None:
            add(rank, i)
    while order:
        rank = heapq.heappop(order)
        for i in sorted(buckets.pop(rank)):
            j = nxt[i]
            if j < 0 or get(sym[i] << 16 | sym[j]) != rank:
                continue  # stale: a symbol of this pair was merged away since it was filed
            sym[i] = rank  # the merged id (ranks are the merged ids)
            k = nxt[j]
            nxt[i] = k
            nxt[j] = -2
            if k >= 0:
                prv[k] = i
                later = get(rank << 16 | sym[k])
                if later is not None:
                    add(later, i)
            h = prv[i]
            if h >= 0:
                later = get(sym[h] << 16 | rank)
                if later is not None:
                    add(later, h)
    out = []
    i = 0
    while i >= 0:
        out.append(sym[i])
        i = nxt[i]
    return out


@lru_cache(maxsize=None)
def load_vocab() -> BytePairVocab:
    """Read the bundled merge list once per process (on first use, never at import)."""
    raw = resources.files("clipforge.text").joinpath(VOCAB_FILE).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    pairs = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]  # line 0 is a header

    symbols = byte_symbols()
    tokens = symbols + [s + END_OF_WORD for s in symbols] + ["".join(p) for p in pairs]
    tokens += [START_OF_TEXT, END_OF_TEXT]
    encoder = {t: i for i, t in enumerate(tokens)}
    # The id arithmetic below relies on these; fail loudly on a different vocabulary file.
    assert len(pairs) == N_MERGES and all(len(p) == 2 for p in pairs), "unexpected merge list"
    assert len(encoder) == len(tokens) == 49408, "merge results must be unique"

    merges = {}
    for rank, (a, b) in enumerate(pairs):
        ia, ib = encoder[a], encoder[b]
        # A merge may only use symbols that exist before it (both merge loops depend on it).
        assert ia < 512 + rank and ib < 512 + rank, f"merge {rank} uses a later symbol"
        merges[ia << 16 | ib] = 512 + rank

    byte_pairs = [_NO_MERGE] * 65536
    for key, merged in merges.items():
        if key >> 16 < 256 and key & 0xFFFF < 256:
            byte_pairs[key >> 16 << 8 | key & 0xFFFF] = merged

    order = byte_order()
    byte_id = [0] * 256
    for i, b in enumerate(order):
        byte_id[b] = i
    decode_char = {s: b for s, b in zip(symbols, order)}
    token_bytes = []
    for t in tokens[:-2]:
        if t.endswith(END_OF_WORD):  # the end of a word decodes to a space
            token_bytes.append(bytes(decode_char[c] for c in t[: -len(END_OF_WORD)]) + b" ")
        else:
            token_bytes.append(bytes(decode_char[c] for c in t))
    token_bytes += [START_OF_TEXT.encode(), END_OF_TEXT.encode()]
    # Only "openai" special-token mode ever splits out these two as words.
    specials = {START_OF_TEXT: (encoder[START_OF_TEXT],), END_OF_TEXT: (encoder[END_OF_TEXT],)}
    return BytePairVocab(
        cache=BoundedCache(100_000, specials),
        tokens=tokens,
        encoder=encoder,
        merges=merges,
        byte_id=byte_id,
        byte_id_end=[i + 256 for i in byte_id],
        byte_id_table=bytes(byte_id),
        byte_pair_merges=byte_pairs,
        token_bytes=token_bytes,
    )
