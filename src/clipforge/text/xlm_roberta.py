"""XLM-RoBERTa's tokenizer: its SentencePiece model (`sentencepiece.bpe.model`, a Unigram model) run
by the sentencepiece library, with fairseq's id layout on top, as transformers' XLMRobertaTokenizer
and open_clip's HFTokenizer("xlm-roberta-base") give.

fairseq's layout: <s> 0, <pad> 1, </s> 2, <unk> 3, then SentencePiece's pieces shifted by one (its
own <unk>, id 0, becomes 3; its <s> / </s> at 1 / 2 are never produced for text). Each row is
<s> ids </s> (the </s> kept when a long text is cut), padded with <pad> to `context_length`; the
model's attention mask is "not <pad>". Before that, open_clip's clean-up (ftfy, HTML entities,
whitespace runs folded; case kept: `normalize.clean_keep_case`), as its HFTokenizer does.

Where ids differ from transformers on purpose: special tokens typed in the text ("</s>") are read
as the characters they are made of, not as special ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from clipforge.errors import InvalidInputError
from clipforge.text.normalize import clean_keep_case

__all__ = ["XlmRobertaTokenizer"]

BOS, PAD, EOS, UNK = 0, 1, 2, 3
FAIRSEQ_OFFSET = 1  # SentencePiece id + 1 = model id (for every piece but <unk>)


class XlmRobertaTokenizer:
    """Turns text into XLM-R token ids (see the module docstring). `model`: the SentencePiece file's bytes."""

    def __init__(self, model: bytes, context_length: int = 77, truncate: bool = True) -> None:
        import sentencepiece

        if not isinstance(model, (bytes, bytearray)) or not model:
            raise InvalidInputError("an XLM-R tokenizer needs its SentencePiece model file's bytes")
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(bytes(model))
        except Exception as exc:  # noqa: BLE001 - sentencepiece raises plain RuntimeError/OSError
            raise InvalidInputError(f"not a usable SentencePiece model ({type(exc).__name__}: {exc})") from None
        if not isinstance(context_length, int) or context_length < 3:
            raise InvalidInputError(f"context_length must be an int of at least 3, got {context_length!r}")
        self._sp = processor
        self._sp_unk = processor.unk_id()
        self.vocab_size = processor.get_piece_size() + FAIRSEQ_OFFSET + 1  # fairseq's <mask> is the last id
        self.context_length = context_length
        self.truncate = bool(truncate)
        self.pad_token_id, self.bos_token_id, self.eos_token_id = PAD, BOS, EOS

    @property
    def sot_token_id(self) -> int:
        return BOS

    @property
    def eot_token_id(self) -> int:
        return EOS

    def __repr__(self) -> str:
        return f"XlmRobertaTokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"

    def encode(self, text: str) -> list[int]:
        """The model ids of `text`, without <s> / </s>."""
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, got {type(text).__name__}")
        return [UNK if i == self._sp_unk else i + FAIRSEQ_OFFSET for i in self._sp.encode(clean_keep_case(text))]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ids, special tokens and padding left out."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self._sp.decode([int(i) - FAIRSEQ_OFFSET for i in ids if int(i) > UNK])

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
            raise InvalidInputError(f"context_length {context} leaves no room for text between <s> and </s>")
        truncate = self.truncate if truncate is None else bool(truncate)
        out = torch.full((len(texts), context), PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            if len(ids) > context - 2:
                if not truncate:
                    raise InvalidInputError(f"text {row} has {len(ids) + 2} tokens, more than the context length "
                                            f"{context}; pass truncate=True to cut it")
                ids = ids[: context - 2]
            full = [BOS, *ids, EOS]
            out[row, : len(full)] = torch.tensor(full, dtype=torch.long)
        return out
