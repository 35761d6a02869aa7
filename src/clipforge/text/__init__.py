"""Text side of CLIP: the byte-level BPE tokenizer (knows nothing of models)."""

from clipforge.text.tokenizer import Tokenizer, default_tokenizer, tokenize

__all__ = ["Tokenizer", "default_tokenizer", "tokenize"]
