"""CLIP's text tokenizer: OpenAI's ids, open_clip's and transformers' conventions, fast batches.

``Tokenizer()(texts)`` returns the same ids as ``clip.tokenize(texts, truncate=True)`` (OpenAI)
and ``open_clip.tokenize(texts)``; see docs/tokenizer.md for the choices made where those
references disagree with each other or misbehave (typed special tokens, padding, crashes).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from itertools import chain
from typing import Literal

import numpy as np
import torch

from clipforge.errors import InvalidInputError
from clipforge.text import normalize
from clipforge.text.bpe import BoundedCache, BytePairVocab, load_vocab

SpecialTokens = Literal["text", "openai"]

# Texts longer than this many characters are tokenized from a growing prefix when truncating,
# so a megabyte of text costs about as much as its first few kilobytes.
_LONG_TEXT_CHARS = 4096
_FIRST_PREFIX_CHARS = 2048
_PREVIEW_CHARS = 40
# Words longer than this many characters are merged only as far as truncation needs (bpe_prefix).
_LONG_WORD_CHARS = 512


END_OF_TEXT_ID = 49407  # CLIP's end token, in its fixed vocabulary


class Tokenizer:
    """Turns text into CLIP token ids: ``[start] + BPE ids + [end]``, padded to the context.

    Args:
        context_length: tokens per row, start and end tokens included (77 for every CLIP model).
        truncate: cut long texts to fit (the last kept slot becomes the end token, as all
            references do); with False a too-long text raises ValueError (OpenAI's default).
        pad_token_id: what fills the row after the end token: 0 (OpenAI, open_clip, LAION's
            transformers repos, the second SDXL / SD 2.x text encoder) or the end token 49407 (OpenAI's
            transformers repos, as Stable Diffusion 1.x feeds its UNet).
        special_tokens: how a literal "<|startoftext|>" / "<|endoftext|>" typed in a text is read.
            "text" (default) encodes it as ordinary characters; "openai" turns it into the special
            id as OpenAI's tokenizer does, which makes CLIP pool at that position and silently
            ignore the rest of the text.
    """

    def __init__(
        self,
        context_length: int = 77,
        truncate: bool = True,
        pad_token_id: int = 0,
        special_tokens: SpecialTokens = "text",
    ) -> None:
        if pad_token_id not in (0, END_OF_TEXT_ID):
            raise InvalidInputError(f"pad_token_id must be 0 or the end token {END_OF_TEXT_ID}, got {pad_token_id!r}")
        if special_tokens not in ("text", "openai"):
            raise InvalidInputError(f"special_tokens must be 'text' or 'openai', got {special_tokens!r}")
        self.context_length = _check_context_length(context_length)
        self.truncate = bool(truncate)
        self._pad_token_id = pad_token_id
        self.special_tokens = special_tokens
        self._vocab: BytePairVocab = load_vocab()
        self._plain_split = normalize.PLAIN_SPLIT[special_tokens]
        self._split = normalize.WORD_SPLIT[special_tokens]
        self._chunks = _CHUNK_CACHES[special_tokens]

    @property
    def sot_token_id(self) -> int:
        return self._vocab.sot_id  # 49406

    @property
    def eot_token_id(self) -> int:
        return self._vocab.eot_id  # 49407

    @property
    def pad_token_id(self) -> int:
        return self._pad_token_id

    @property
    def vocab_size(self) -> int:
        return len(self._vocab.tokens)  # 49408

    def __repr__(self) -> str:
        return (
            f"Tokenizer(context_length={self.context_length}, truncate={self.truncate}, "
            f"pad_token_id={self.pad_token_id}, special_tokens={self.special_tokens!r})"
        )

    def __call__(
        self,
        texts: str | Sequence[str],
        context_length: int | None = None,
        truncate: bool | None = None,
    ) -> torch.Tensor:
        """Token ids as a LongTensor [len(texts), context_length]; a single str gives [1, ...]."""
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, (bytes, bytearray)):
            raise TypeError("texts must be str, not bytes: decode them first")
        elif hasattr(texts, "__iter__"):
            texts = list(texts)
        else:
            raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
        ctx = self.context_length if context_length is None else _check_context_length(context_length)
        truncate = self.truncate if truncate is None else bool(truncate)
        limit = ctx - 2 if truncate else None  # with truncation only the first ctx - 2 ids matter

        rows, ids, counts = self._content(texts, limit)
        if not truncate:
            too_long = np.flatnonzero(counts > ctx - 2)
            if too_long.size:
                first = too_long[np.argmin(rows[too_long])]  # rows are not in input order
                i = int(rows[first])
                raise InvalidInputError(_too_long_message(i, texts[i], int(counts[first]) + 2, ctx))

        out = np.full((len(texts), ctx), self.pad_token_id, dtype=np.int64)
        out[:, 0] = self.sot_token_id
        kept = np.minimum(counts, ctx - 2)
        # Scatter every text's ids into its row at columns 1, 2, ...; drop what does not fit.
        starts = np.cumsum(counts) - counts
        cols = np.arange(len(ids)) - np.repeat(starts, counts) + 1
        fits = cols <= ctx - 2
        out[np.repeat(rows, counts)[fits], cols[fits]] = ids[fits]
        out[rows, kept + 1] = self.eot_token_id
        return torch.from_numpy(out)

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """BPE ids of ``text`` without start/end tokens; all of them, or the first ``max_tokens``.

        With ``max_tokens`` the work is about what those tokens span, however long the text (the
        same ids as the first ``max_tokens`` of the whole encoding). Without it the whole text is
        encoded: O(n log n) in its length, about 1 to 2 s per megabyte of one space-free "word".
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if max_tokens is not None:
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 0:
                raise InvalidInputError(f"max_tokens must be a non-negative int or None, got {max_tokens!r}")
            if max_tokens == 0:
                return []
            return self._text_ids(text, int(max_tokens))
        return self._text_ids(text, None)

    def decode(self, ids: Sequence[int] | torch.Tensor | np.ndarray) -> str:
        """The text that ``ids`` spell, lower-cased and split into words by spaces.

        A leading start token, the final end token and the padding after it are dropped; any
        other special id decodes to its literal "<|...|>" string.
        """
        if getattr(ids, "ndim", 1) != 1:
            raise InvalidInputError("decode takes one sequence of ids; decode a batch row by row")
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InvalidInputError(f"token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        eot = self.eot_token_id
        if ids and ids[0] == self.sot_token_id:
            ids = ids[1:]
        end = len(ids)
        zeros = end
        while zeros > 0 and ids[zeros - 1] == 0:
            zeros -= 1
        if zeros < end and zeros > 0 and ids[zeros - 1] == eot:
            end = zeros - 1  # end token, then padding with 0
        else:
            while end > 0 and ids[end - 1] == eot:
                end -= 1  # end token, then padding with end tokens (or none)
        return self._vocab.decode_bytes(ids[:end]).decode("utf-8", "replace").strip()

    # -- internals --------------------------------------------------------------------------

    def _content(self, texts: list[str], limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row of each text, all ids concatenated, id count per text); rows in input order.

        Short plain texts go through one batched split; the rest one at a time.
        """
        sep = normalize.BATCH_SEPARATOR
        try:
            joined = sep.join(texts)
        except TypeError:
            _raise_not_str(texts)
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        other = self._not_plain(texts, joined, lengths)
        if other.size:
            keep = np.ones(len(texts), dtype=bool)
            keep[other] = False
            plain_rows, other_rows = np.flatnonzero(keep).tolist(), other.tolist()
            joined = sep.join([texts[i] for i in plain_rows])
        else:
            plain_rows, other_rows = list(range(len(texts))), []

        rows = np.asarray(plain_rows + other_rows, dtype=np.int64)
        if not plain_rows:
            flat, plain_counts = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        else:
            flat, plain_counts = self._plain_batch(joined, len(plain_rows), limit)
        other_ids = [self._text_ids(texts[i], limit) for i in other_rows]
        other_counts = np.fromiter(map(len, other_ids), dtype=np.int64, count=len(other_ids))
        ids = np.concatenate([flat, np.fromiter(chain.from_iterable(other_ids), dtype=np.int64)])
        return rows, ids, np.concatenate([plain_counts, other_counts])

    @staticmethod
    def _not_plain(texts: list[str], joined: str, lengths: np.ndarray) -> np.ndarray:
        """Sorted indices of the texts that need the full clean-up (or are long)."""
        long = np.flatnonzero(lengths > _LONG_TEXT_CHARS)
        if normalize.is_plain_batch(joined, len(texts)):
            return long
        if joined.count(normalize.BATCH_SEPARATOR) != len(texts) - 1:  # a text holds NUL itself
            flagged = [i for i, t in enumerate(texts) if not normalize.is_plain(t)]
        else:
            # One scan of the whole batch; a hit's position tells which text it is in.
            ends = np.cumsum(lengths + 1) - 1  # where the separator after each text sits
            hits = [m.start() for m in normalize.NOT_PLAIN_RUN.finditer(joined)]
            flagged = np.searchsorted(ends, hits)
        return np.union1d(long, flagged).astype(np.int64)

    def _plain_batch(self, joined: str, n: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Ids of ``n`` plain texts joined by the separator, and the count for each text.

        Plain text splits into words the same way within each whitespace-separated chunk, so the
        chunks ("cat.", "don't") are cached too, and a whole batch is one str.split() plus one
        C-level pass of dict lookups; separators map to -1. With ``limit`` (truncation), a long
        chunk contributes only its first ``limit`` ids (no text keeps more), merged as far as
        those need and kept out of the shared cache.
        """
        sep = normalize.BATCH_SEPARATOR
        chunks = joined.lower().replace(sep, f" {sep} ").split()
        cache = self._chunks
        long: dict[str, tuple[int, ...]] = {}
        for _ in range(2):
            missing = set(chunks).difference(cache)
            if missing:
                if limit is not None:
                    long.update((c, self._chunk_ids(c, limit)) for c in missing if len(c) > _LONG_WORD_CHARS and c not in long)
                cache.add({c: self._chunk_ids(c) for c in missing if c not in long})
            lookup = cache.__getitem__ if not long else lambda c: long[c] if c in long else cache[c]
            try:
                flat = np.fromiter(chain.from_iterable(map(lookup, chunks)), dtype=np.int64)
                break
            except KeyError:  # the cache started over meanwhile (full, or another thread): retry
                continue
        else:  # more distinct chunks than the cache holds: no cache for this batch
            flat = np.fromiter(chain.from_iterable(self._chunk_ids(c, limit) for c in chunks), dtype=np.int64)
        for c in missing:
            if len(c) > self._vocab.max_cached_word_chars:
                cache.pop(c, None)  # huge chunks: used once, not kept
        seps = np.flatnonzero(flat < 0)
        counts = np.diff(seps, prepend=-1, append=len(flat)) - 1
        assert len(counts) == n, "a plain text held the batch separator"
        return flat[flat >= 0], counts

    def _chunk_ids(self, chunk: str, limit: int | None = None) -> tuple[int, ...]:
        """Ids of one whitespace-free chunk of plain text; its first ``limit`` ids when given and
        the chunk is long (a long word is merged only as far as those need)."""
        if chunk == normalize.BATCH_SEPARATOR:
            return _SEPARATOR_IDS
        vocab = self._vocab
        if limit is not None and len(chunk) > _LONG_WORD_CHARS:
            ids: list[int] = []
            for word in (chunk,) if chunk.isalpha() else self._plain_split.findall(chunk):
                if len(word) > _LONG_WORD_CHARS:
                    ids.extend(vocab.bpe_prefix(word, limit - len(ids)))
                else:
                    ids.extend(vocab.word_ids(word))
                if len(ids) >= limit:
                    break
            return tuple(ids[:limit])
        word_ids = vocab.word_ids
        if chunk.isalpha():  # plain text: only a-z, so the chunk is one word
            return word_ids(chunk)
        return tuple(chain.from_iterable(word_ids(w) for w in self._plain_split.findall(chunk)))

    def _text_ids(self, text: str, limit: int | None) -> list[int]:
        """Ids of one text; only the first ``limit`` when given (None: all of them)."""
        plain = normalize.is_plain(text)
        if limit is None or len(text) <= _LONG_TEXT_CHARS:
            return self._prefix_ids(text, plain, limit)
        # Long text: tokenize a prefix that ends at a safe cut (see normalize.PLAIN_CUT) and
        # double it until it yields enough ids; the work stays proportional to what is kept.
        cut = normalize.PLAIN_CUT if plain else normalize.LINE_CUT
        size = _FIRST_PREFIX_CHARS
        while size < len(text):
            found = cut.search(text, size)
            if found is None:
                break
            ids = self._prefix_ids(text[: found.end()], plain, limit)
            if len(ids) >= limit:
                return ids
            size = 2 * found.end()
        return self._prefix_ids(text, plain, limit)

    def _prefix_ids(self, text: str, plain: bool, limit: int | None) -> list[int]:
        vocab = self._vocab
        if plain:
            words = self._plain_split.finditer(text.lower())
        else:
            words = self._split.finditer(normalize.clean(text))
        ids: list[int] = []
        for match in words:
            word = match.group()
            if limit is not None and len(word) > _LONG_WORD_CHARS:
                # A long word (no space for a megabyte, say): only the tokens that fit are merged.
                ids.extend(vocab.bpe_prefix(word, limit - len(ids)))
            else:
                ids.extend(vocab.word_ids(word))
            if limit is not None and len(ids) >= limit:
                return ids[:limit]
        return ids


_SEPARATOR_IDS = (-1,)
# Chunk caches, one per special-token mode (a chunk "<|endoftext|>" means different ids in each).
_CHUNK_CACHES = {
    mode: BoundedCache(100_000, {normalize.BATCH_SEPARATOR: _SEPARATOR_IDS}) for mode in ("text", "openai")
}


def _check_context_length(context_length: int) -> int:
    if isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer)):
        raise TypeError(f"context_length must be an int, got {type(context_length).__name__}")
    if context_length < 2:
        raise InvalidInputError(f"context_length must be at least 2 (start and end tokens), got {context_length}")
    return int(context_length)


def _raise_not_str(texts: list[object]) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    raise TypeError("texts must be str or a sequence of str")


def _too_long_message(index: int, text: str, n_tokens: int, context_length: int) -> str:
    preview = text[:_PREVIEW_CHARS] + ("..." if len(text) > _PREVIEW_CHARS else "")
    return (
        f"texts[{index}] has {n_tokens} tokens (start and end included), more than the context "
        f"length {context_length}: {preview!r}. Pass truncate=True to cut it."
    )


_default: Tokenizer | None = None
_default_lock = threading.Lock()


def default_tokenizer() -> Tokenizer:
    """The shared Tokenizer() behind ``tokenize``; built on first use, not at import."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Tokenizer()
    return _default


def tokenize(texts: str | Sequence[str], context_length: int = 77, truncate: bool = True) -> torch.Tensor:
    """``Tokenizer()(texts, context_length, truncate)`` with a shared default tokenizer."""
    return default_tokenizer()(texts, context_length=context_length, truncate=truncate)
