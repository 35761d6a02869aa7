"""Text clean-up and pre-tokenization, exactly as OpenAI's CLIP tokenizer does it.

OpenAI's pipeline per text is: ``ftfy.fix_text`` -> ``html.unescape`` twice -> strip -> fold
runs of whitespace to one space -> lower-case -> split with one regular expression. The split
never yields whitespace, so the strip and the folding do not change the resulting words; they are
kept on the general path anyway so that it reads like the reference.

The plain path (see ``is_plain``) covers most real captions and skips ftfy and html altogether;
``tests/test_tokenizer.py`` checks it against the reference on the corpus and on ASCII fuzz.
"""

from __future__ import annotations

import html
import re

import ftfy
import regex

# OpenAI's split. "IGNORECASE" matters even on lower-cased text, e.g. "'ſ" (long s) matches "'s".
_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_SPECIALS = r"""<\|startoftext\|>|<\|endoftext\|>|"""
WORD_SPLIT = {
    "text": regex.compile(_WORDS, regex.IGNORECASE),
    "openai": regex.compile(_SPECIALS + _WORDS, regex.IGNORECASE),
}

# The same split for plain text (below), where \p{L} is [a-z] after lower-casing and \p{N} is
# [0-9]. The standard-library engine is a little faster on it.
_PLAIN_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+"""
PLAIN_SPLIT = {
    "text": re.compile(_PLAIN_WORDS),
    "openai": re.compile(_SPECIALS + _PLAIN_WORDS),
}

# Joins a batch of plain texts (which never hold it) so they can be lower-cased and split at once.
BATCH_SEPARATOR = "\x00"

# ASCII characters that ftfy or html.unescape might act on: the control characters ftfy deletes
# (everything below 0x20 except tab, line feed, form feed and carriage return; and DEL), ESC
# (terminal escapes) is among them, and "&" (HTML entities). Carriage returns ftfy turns into line
# feeds, which the split treats alike.
_NOT_PLAIN = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f&]")
_NOT_PLAIN_BUT_NUL = re.compile(r"[\x01-\x08\x0b\x0e-\x1f\x7f&]")
# Runs of characters a plain text may not hold ("\x00" is allowed here: it separates a batch).
NOT_PLAIN_RUN = re.compile(r"[^\x00\t\n\x0c\r\x20-\x25\x27-\x7e]+")
_WHITESPACE = regex.compile(r"\s+")

# html.unescape calls int() on every "&#<digits>": Python refuses more than 4,300 digits by
# default (OpenAI's tokenizer raises ValueError on such a text) and is quadratic without that
# limit. Shortening the number first changes nothing else: leading zeros go, and 8 or more
# digits are out of Unicode's range anyway, which html.unescape reads as U+FFFD.
_LONG_DECIMAL_REF = re.compile(r"&#([0-9]{8,})")


def _shorten_decimal_ref(match: re.Match[str]) -> str:
    digits = match.group(1).lstrip("0") or "0"
    return "&#" + (digits if len(digits) <= 7 else "1114112")  # one above U+10FFFF: U+FFFD


def is_plain(text: str) -> bool:
    """True when ftfy and html.unescape provably leave ``text`` alone (ASCII, no "&", no controls).

    On such text ftfy's steps are no-ops: mojibake repair returns ASCII unchanged, the other
    character fixes only touch non-ASCII, and HTML unescaping needs "&".
    """
    return text.isascii() and _NOT_PLAIN.search(text) is None


def is_plain_batch(joined: str, n_texts: int) -> bool:
    """``is_plain`` for every one of ``n_texts`` texts joined by BATCH_SEPARATOR, in one scan."""
    return (
        joined.isascii()
        and _NOT_PLAIN_BUT_NUL.search(joined) is None
        and joined.count(BATCH_SEPARATOR) == n_texts - 1
    )


def _unescape(text: str) -> str:
    if "&#" in text:
        text = _LONG_DECIMAL_REF.sub(_shorten_decimal_ref, text)
    return html.unescape(text)


def clean(text: str) -> str:
    """OpenAI's clean-up: the text as the split sees it (lower-cased)."""
    text = ftfy.fix_text(text)
    text = _unescape(_unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def clean_keep_case(text: str) -> str:
    """open_clip's HFTokenizer clean-up (its default clean="whitespace"): OpenAI's without the
    lower-casing, for case-sensitive tokenizers (XLM-R)."""
    text = ftfy.fix_text(text)
    text = _unescape(_unescape(text)).strip()
    return " ".join(text.split())


# Where a long text may be cut so that its prefix yields exactly its leading words. Plain text:
# at any whitespace (nothing acts across it). Other text: only after a line feed, because
# ftfy.fix_text fixes lines as independent segments, and nothing later in the pipeline (entities,
# case, split) reaches across a line feed.
PLAIN_CUT = re.compile(r"[ \t\n\r\x0c]")
LINE_CUT = re.compile(r"\n")
