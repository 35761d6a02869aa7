"""Tokenizers that run a SentencePiece model (the sentencepiece library, not a re-implementation):
SigLIP's (T5-style `spiece.model`, big_vision's text clean-up) and SigLIP 2's (Gemma's `tokenizer.model`).

`SentencePieceTokenizer(model_bytes, ...)(texts)` gives `[len(texts), context_length]` ids:
`clean(text)`, SentencePiece ids, `bos` before and `eos` after (the eos kept when a long text is
cut, as transformers' `truncation=True` and big_vision's "sticky" eos do), then *always* padded
with `pad_token_id` to `context_length`. SigLIP reads the last position, which for a short text
is padding: padding to the longest text of a batch (transformers' default `padding=True`), or
with another id, changes every embedding. That is the accuracy trap the SigLIP model cards warn
about; this tokenizer has no other mode.

Where ids differ from transformers' tokenizers on purpose: a special token typed in the text
("</s>", "<eos>") is read as the characters it is made of, not as the special id (as clipforge's
CLIP tokenizer does by default); transformers turns it into the special token.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Optional

import torch

from clipforge.errors import InvalidInputError

__all__ = ["SentencePieceTokenizer", "clean_text"]

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_WHITESPACE = re.compile(r"\s+")
# Texts longer than this are tokenized from a prefix ending at a whitespace, when truncating: with
# SentencePiece's default split at whitespace, pieces before the cut are the same as in the whole.
_LONG_TEXT_CHARS = 4096


def clean_text(text: str, clean: str) -> str:
    """big_vision's / transformers' SiglipTokenizer clean-up ("canonicalize": lower case, ASCII
    punctuation removed, whitespace runs collapsed to one space, stripped), "lower", or "none"."""
    if clean == "none":
        return text
    if clean == "lower":
        return text.lower()
    if clean == "canonicalize":
        return _WHITESPACE.sub(" ", text.lower().translate(_PUNCTUATION)).strip()
    raise InvalidInputError(f"clean must be 'none', 'lower' or 'canonicalize', got {clean!r}")


class SentencePieceTokenizer:
    """Turns text into token ids with a SentencePiece model: see the module docstring.

    Args:
        model: the SentencePiece model file's bytes (`spiece.model`, `tokenizer.model`).
        context_length: ids per row, special tokens included (64 for SigLIP and SigLIP 2).
        pad_token_id: what fills each row after the text (SigLIP: 1, "</s>"; SigLIP 2's transformers
            tokenizer: 0, "<pad>").
        eos_token_id / bos_token_id: added after / before the text (None: not added).
        clean: text clean-up before tokenizing ("canonicalize", "lower", "none").
        truncate: cut long texts to fit (keeping the eos); False raises for a too-long text.
    """

    def __init__(
        self,
        model: bytes,
        context_length: int = 64,
        pad_token_id: int = 0,
        eos_token_id: Optional[int] = None,
        bos_token_id: Optional[int] = None,
        clean: str = "none",
        truncate: bool = True,
    ) -> None:
        import sentencepiece

        if not isinstance(model, (bytes, bytearray)) or not model:
            raise InvalidInputError("a SentencePiece tokenizer needs its model file's bytes")
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(bytes(model))
        except Exception as exc:  # noqa: BLE001 - sentencepiece raises plain RuntimeError/OSError
            raise InvalidInputError(f"not a usable SentencePiece model ({type(exc).__name__}: {exc})") from None
        self._sp = processor
        self.vocab_size = processor.get_piece_size()
        specials = {"pad_token_id": pad_token_id, "eos_token_id": eos_token_id, "bos_token_id": bos_token_id}
        for name, value in specials.items():
            if value is not None and not (isinstance(value, int) and 0 <= value < self.vocab_size):
                raise InvalidInputError(f"{name} {value!r} is not an id of this {self.vocab_size}-piece vocabulary")
        n_special = (eos_token_id is not None) + (bos_token_id is not None)
        if not isinstance(context_length, int) or context_length <= n_special:
            raise InvalidInputError(f"context_length must be an int above {n_special}, got {context_length!r}")
        clean_text("", clean)  # checks the name
        self.context_length = context_length
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.bos_token_id = bos_token_id
        self.clean = clean
        self.truncate = bool(truncate)

    # What diffusion-style callers read from clipforge's CLIP tokenizer, under the same names.
    @property
    def sot_token_id(self) -> Optional[int]:
        return self.bos_token_id

    @property
    def eot_token_id(self) -> Optional[int]:
        return self.eos_token_id

    def __repr__(self) -> str:
        return (f"SentencePieceTokenizer(vocab_size={self.vocab_size}, context_length={self.context_length}, "
                f"pad_token_id={self.pad_token_id}, eos_token_id={self.eos_token_id}, "
                f"bos_token_id={self.bos_token_id}, clean={self.clean!r})")

    def encode(self, text: str, max_tokens: Optional[int] = None) -> list[int]:
        """The ids of `text` after clean-up, without special tokens (the first `max_tokens` of them)."""
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, got {type(text).__name__}")
        text = clean_text(text, self.clean)
        if max_tokens is not None and len(text) > _LONG_TEXT_CHARS:
            cut = text.rfind(" ", 0, _LONG_TEXT_CHARS)
            prefix_ids = self._sp.encode(text[: cut if cut > 0 else _LONG_TEXT_CHARS])
            if len(prefix_ids) > max_tokens + 1:
                return prefix_ids[:max_tokens]
        ids = self._sp.encode(text)
        return ids if max_tokens is None else ids[:max_tokens]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ids, special tokens and padding left out."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        special = {self.pad_token_id, self.eos_token_id, self.bos_token_id}
        return self._sp.decode([int(i) for i in ids if int(i) not in special])

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
        truncate = self.truncate if truncate is None else bool(truncate)
        prefix = [self.bos_token_id] if self.bos_token_id is not None else []
        suffix = [self.eos_token_id] if self.eos_token_id is not None else []
        room = context - len(prefix) - len(suffix)
        if room < 0:
            raise InvalidInputError(f"context_length {context} leaves no room for the special tokens")
        out = torch.full((len(texts), context), self.pad_token_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text, max_tokens=room + 1 if truncate else None)
            if len(ids) > room:
                if not truncate:
                    raise InvalidInputError(
                        f"text {row} has {len(ids) + len(prefix) + len(suffix)} tokens, more than the context "
                        f"length {context}; pass truncate=True to cut it"
                    )
                ids = ids[:room]
            full = prefix + ids + suffix
            out[row, : len(full)] = torch.tensor(full, dtype=torch.long)
        return out
