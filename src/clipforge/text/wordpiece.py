"""BERT's WordPiece tokenizer, run by the `tokenizers` library (not re-implemented): Chinese-CLIP's.

`WordPieceTokenizer(vocab_bytes, ...)(texts)` gives `[len(texts), context_length]` ids, as
transformers' `BertTokenizer` / `BertTokenizerFast` with `padding="max_length", truncation=True`:
BERT's normalizer (control characters removed, whitespace unified, a space around every CJK
ideograph, and with `lowercase` lower case and accents stripped), BERT's pre-tokenizer (whitespace
and punctuation split), greedy longest-match WordPiece with "##" continuations and `[UNK]` for
words over 100 characters or without pieces; then `[CLS]` before, `[SEP]` after (kept when a long
text is cut), padding with `[PAD]` to `context_length`. The model's attention mask is "not [PAD]".

Where ids differ from transformers on purpose: special tokens typed in the text ("[SEP]") are
read as the characters they are made of, not as special ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from clipforge.errors import InvalidInputError

__all__ = ["WordPieceTokenizer", "read_vocab"]

MAX_VOCAB = 2_000_000  # BERT vocabularies hold 20k-120k pieces


def read_vocab(vocab: bytes) -> dict[str, int]:
    """vocab.txt (one piece per line, id = line number) -> {piece: id}; a bad file is an InvalidInputError."""
    if not isinstance(vocab, (bytes, bytearray)) or not vocab:
        raise InvalidInputError("a WordPiece tokenizer needs its vocab.txt file's bytes")
    try:
        text = bytes(vocab).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"vocab.txt is not UTF-8 text ({exc})") from None
    pieces = text.split("\n")
    if pieces and pieces[-1] == "":
        pieces.pop()  # the final newline
    if len(pieces) > MAX_VOCAB:
        raise InvalidInputError(f"vocab.txt has {len(pieces):,} lines, over {MAX_VOCAB:,}; refused")
    out: dict[str, int] = {}
    for i, piece in enumerate(pieces):
        # As transformers' load_vocab: the line without its trailing newline (and "\r"); a repeated
        # piece keeps its last id.
        out[piece.rstrip("\r\n")] = i
    return out


class WordPieceTokenizer:
    """Turns text into token ids with a BERT vocabulary: see the module docstring.

    Args:
        vocab: vocab.txt's bytes.
        context_length: ids per row, [CLS] and [SEP] included (52 for Chinese-CLIP).
        lowercase: lower-case and strip accents first (BertTokenizer's do_lower_case; True for Chinese-CLIP).
        truncate: cut long texts to fit (keeping [SEP]); False raises for a too-long text.
        cls_token / sep_token / pad_token / unk_token: the special pieces, which must be in the vocabulary.
    """

    def __init__(
        self,
        vocab: bytes,
        context_length: int = 52,
        lowercase: bool = True,
        truncate: bool = True,
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        unk_token: str = "[UNK]",
    ) -> None:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        pieces = read_vocab(vocab)
        missing = [t for t in (cls_token, sep_token, pad_token, unk_token) if t not in pieces]
        if missing:
            raise InvalidInputError(f"vocab.txt lacks the special token(s) {missing}")
        if not isinstance(context_length, int) or context_length < 3:
            raise InvalidInputError(f"context_length must be an int of at least 3, got {context_length!r}")
        tokenizer = Tokenizer(models.WordPiece(vocab=pieces, unk_token=unk_token, max_input_chars_per_word=100))
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=bool(lowercase))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self._tokenizer = tokenizer
        self.vocab_size = len(pieces)
        self.context_length = context_length
        self.lowercase = bool(lowercase)
        self.truncate = bool(truncate)
        self.cls_token_id = pieces[cls_token]
        self.sep_token_id = pieces[sep_token]
        self.pad_token_id = pieces[pad_token]
        self.unk_token_id = pieces[unk_token]

    # What diffusion-style callers read from clipforge's CLIP tokenizer, under the same names.
    @property
    def sot_token_id(self) -> int:
        return self.cls_token_id

    @property
    def eot_token_id(self) -> int:
        return self.sep_token_id

    def __repr__(self) -> str:
        return (f"WordPieceTokenizer(vocab_size={self.vocab_size}, context_length={self.context_length}, "
                f"lowercase={self.lowercase}, pad_token_id={self.pad_token_id})")

    def encode(self, text: str) -> list[int]:
        """The ids of `text`, without [CLS] / [SEP]."""
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, got {type(text).__name__}")
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ids ("##" pieces joined), special tokens and padding left out."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        special = {self.cls_token_id, self.sep_token_id, self.pad_token_id}
        from tokenizers import decoders

        pieces = [self._tokenizer.id_to_token(int(i)) for i in ids if int(i) not in special]
        return decoders.WordPiece().decode([p for p in pieces if p is not None])

    def __call__(
        self, texts: str | Sequence[str], context_length: Optional[int] = None, truncate: Optional[bool] = None
    ) -> torch.Tensor:
        """Token ids as a LongTensor [len(texts), context_length]; a single str gives [1, ...]."""
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, (bytes, bytearray)):
            raise TypeError("texts must be str, not bytes: decode them first")
        texts = list(texts)
        context = self.context_length if context_length is None else int(context_length)
        if context < 3:
            raise InvalidInputError(f"context_length {context} leaves no room for text between [CLS] and [SEP]")
        truncate = self.truncate if truncate is None else bool(truncate)
        room = context - 2
        out = torch.full((len(texts), context), self.pad_token_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            if len(ids) > room:
                if not truncate:
                    raise InvalidInputError(
                        f"text {row} has {len(ids) + 2} tokens, more than the context length {context}; "
                        "pass truncate=True to cut it")
                ids = ids[:room]
            full = [self.cls_token_id, *ids, self.sep_token_id]
            out[row, : len(full)] = torch.tensor(full, dtype=torch.long)
        return out
