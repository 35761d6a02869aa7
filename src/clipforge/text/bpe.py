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
"""

from __future__ import annotations

import gzip
import heapq
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # CLIP's vocabulary: 512 byte symbols + 48,894 merges + 2 specials
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
END_OF_WORD = "</w>"

# Words up to this many bytes use the simple merge loop (quadratic, but in C for short lists);
# longer ones the bucketed one, which stays near-linear for a megabyte-long "word".
_SHORT_WORD_BYTES = 128
_NO_MERGE = 1 << 30


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
        symbols = list(data[:-1].translate(self.byte_id_table))  # mid-word byte ids are < 256
        symbols.append(self.byte_id_end[data[-1]])
        if len(symbols) <= _SHORT_WORD_BYTES:
            return tuple(_merge_rounds(symbols, self.merges, self.byte_pair_merges))
        return tuple(_merge_buckets(symbols, self.merges))

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
