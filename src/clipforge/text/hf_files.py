"""The tokenizer files of a transformers CLIP directory (vocab.json, merges.txt, tokenizer_config.json,
special_tokens_map.json), written from clipforge's own BPE vocabulary.

A directory without them opens as a `CLIPModel` but not as a `CLIPProcessor` ("Can't load tokenizer
for ..."), which is what Stable Diffusion users meet. transformers' `CLIPTokenizer` reads these files
and gives OpenAI's ids (tests/test_first_contact.py checks it).
"""

from __future__ import annotations

import gzip
import json
from importlib import resources

from clipforge.text.bpe import (
    END_OF_TEXT,
    N_MERGES,
    START_OF_TEXT,
    VOCAB_FILE,
    load_vocab,
)

__all__ = ["hf_tokenizer_files"]


def hf_tokenizer_files(context_length: int = 77, pad_token: str = END_OF_TEXT) -> dict[str, str]:
    """{file name: content} of a transformers CLIPTokenizer for CLIP's vocabulary.

    pad_token: "<|endoftext|>" as OpenAI's hub repos (what Stable Diffusion 1.x pipelines expect), or
    "!" (id 0) as LAION's repos and open_clip pad.
    """
    vocab = load_vocab()
    lines = gzip.decompress(resources.files("clipforge.text").joinpath(VOCAB_FILE).read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]  # line 0 of OpenAI's file is a header too
    special = {"bos_token": START_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT, "pad_token": pad_token}
    config = {
        **special,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": context_length,
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
    }
    return {
        "vocab.json": json.dumps({token: i for i, token in enumerate(vocab.tokens)}, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
        "special_tokens_map.json": json.dumps(special, indent=2) + "\n",
    }
