"""Text side of CLIP families: tokenizers (knows nothing of models).

`tokenizer_from_config(TokenizerConfig)` builds the tokenizer a record describes, one constructor
per `TokenizerConfig.kind` (TOKENIZER_BUILDERS); a new kind adds its module and one line there
(docs/families.md). clipforge's own byte-level BPE is CLIP's; other kinds wrap well-kept
libraries (sentencepiece, tokenizers).
"""

from typing import Any, Callable

from clipforge.configs import TokenizerConfig
from clipforge.errors import InvalidInputError
from clipforge.text.tokenizer import Tokenizer, default_tokenizer, tokenize


class MissingTokenizerError(InvalidInputError):
    """The record names a tokenizer model file whose bytes did not come with the weights."""


def _clip_bpe(config: TokenizerConfig) -> Tokenizer:
    return Tokenizer(context_length=config.context_length, pad_token_id=config.pad_token_id)


class MissingTokenizer:
    """Stands in for a tokenizer whose model file did not come with the weights: the model still
    loads (its image tower and `encode_text` on ids work); tokenizing text raises MissingTokenizerError."""

    def __init__(self, config: TokenizerConfig) -> None:
        self.context_length = config.context_length
        self.pad_token_id = config.pad_token_id

    def _missing(self) -> MissingTokenizerError:
        return MissingTokenizerError(
            "this model's SentencePiece tokenizer file did not come with its weights (a transformers directory "
            "without spiece.model / tokenizer.model, or a bare state dict): load it from a directory or clipforge "
            "file that holds it"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._missing()

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        raise self._missing()

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        raise self._missing()


def _sentencepiece(config: TokenizerConfig) -> Any:
    from clipforge.text.sentencepiece import SentencePieceTokenizer

    if config.model is None:
        return MissingTokenizer(config)
    return SentencePieceTokenizer(config.model, context_length=config.context_length, pad_token_id=config.pad_token_id,
                                  eos_token_id=config.eos_token_id, bos_token_id=config.bos_token_id, clean=config.clean)


# TokenizerConfig.kind -> constructor.
TOKENIZER_BUILDERS: dict[str, Callable[[TokenizerConfig], Any]] = {
    "clip_bpe": _clip_bpe,
    "sentencepiece": _sentencepiece,
}


def tokenizer_from_config(config: TokenizerConfig) -> Any:
    """The tokenizer `config` describes: a callable `texts -> LongTensor [n, context_length]` with
    `context_length`, `pad_token_id`, `encode(text)` and `decode(ids)`."""
    builder = TOKENIZER_BUILDERS.get(config.kind)
    if builder is None:
        raise InvalidInputError(f"unknown tokenizer kind {config.kind!r}; known: {', '.join(TOKENIZER_BUILDERS)}")
    return builder(config)


__all__ = ["MissingTokenizer", "MissingTokenizerError", "TOKENIZER_BUILDERS", "Tokenizer", "default_tokenizer", "tokenize",
           "tokenizer_from_config"]
