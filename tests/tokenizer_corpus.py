"""A deterministic, offline corpus of awkward and ordinary text for tokenizer tests and benchmarks.

Real text comes from the machine itself: Debian package descriptions (/var/lib/dpkg/status and,
when present, apt's package lists), words taken from them, and Unicode character names. Around it
are generated strings that aim at the tricky parts of OpenAI's clean-up: HTML entities, mojibake
that ftfy repairs, many scripts, emoji sequences, control characters, very long texts, typed
special tokens, and ASCII fuzz for the plain-text fast path.

    build_corpus()          -> dict category -> list of strings (>= 20,000 in all), cached on disk
    realistic_captions(n)   -> caption-like texts for benchmarks
    long_tail_texts(n, seed)-> texts made mostly of words no cache has seen

The corpus depends on what the machine has installed (package lists), but not on anything else;
the same machine always builds the same corpus. Run ``python tests/tokenizer_corpus.py`` to print
its size per category.
"""

from __future__ import annotations

import glob
import gzip
import json
import lzma
import os
import random
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

CORPUS_VERSION = 4
MIN_SIZE = 20_000
CACHE_DIR = Path(__file__).resolve().parent / ".corpus_cache"

# --------------------------------------------------------------------------------------------
# Real text from the machine


def _read_packages_file(path: str) -> str:
    """Text of a dpkg status file or an apt Packages list, in whatever compression apt used."""
    try:
        if path.endswith(".gz"):
            return gzip.open(path).read().decode("utf-8", "replace")
        if path.endswith(".xz"):
            return lzma.open(path).read().decode("utf-8", "replace")
        if path.endswith(".lz4"):
            tool = shutil.which("lz4cat")
            cmd = [tool, path] if tool else ["/usr/lib/apt/apt-helper", "cat-file", path]
            run = subprocess.run(cmd, capture_output=True, timeout=120, check=True)
            return run.stdout.decode("utf-8", "replace")
        return Path(path).read_text("utf-8", "replace")
    except (OSError, subprocess.SubprocessError, EOFError, lzma.LZMAError):
        return ""


def _descriptions(text: str) -> list[tuple[str, str]]:
    """(short description, long description with its line breaks) per package stanza."""
    out = []
    for stanza in text.split("\n\n"):
        lines = stanza.split("\n")
        for i, line in enumerate(lines):
            if line.startswith("Description:"):
                body = []
                for cont in lines[i + 1 :]:
                    if not cont.startswith(" "):
                        break
                    body.append("" if cont.strip() == "." else cont[1:])
                out.append((line[len("Description:") :].strip(), "\n".join(body)))
                break
    return out


def debian_descriptions() -> tuple[list[str], list[str]]:
    """(short descriptions, long descriptions), sorted and de-duplicated."""
    paths = ["/var/lib/dpkg/status"] + sorted(glob.glob("/var/lib/apt/lists/*_Packages*"))
    short, long = set(), set()
    for path in paths:
        for s, body in _descriptions(_read_packages_file(path)):
            short.add(s)
            if body:
                long.add(body)
    return sorted(short), sorted(long)


def _spread(items: list[str], n: int) -> list[str]:
    """n items evenly spread over a sorted list (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def unicode_names(rng: random.Random, n: int) -> list[str]:
    """Character names, the characters themselves, and both mixed, from all of Unicode."""
    named = [(chr(c), unicodedata.name(chr(c))) for c in range(0x110000) if unicodedata.name(chr(c), "")]
    picked = rng.sample(named, min(n, len(named)))
    out = []
    for k, (char, name) in enumerate(picked):
        form = k % 4
        if form == 0:
            out.append(name)
        elif form == 1:
            out.append(f"{char} {name.lower()}")
        elif form == 2:
            out.append(f"a photo of {char}{char} ({name.title()})")
        else:
            out.append(char * rng.randint(1, 5))
    return out


# --------------------------------------------------------------------------------------------
# Generated text

_SCRIPTS = {
    "cjk": ["一张猫的照片", "東京タワーの夜景", "서울의 밤 풍경 사진", "漢字とひらがなとカタカナ", "我爱北京天安门", "ＬＯＵＤ　ＮＯＩＳＥＳ"],
    "arabic": ["صورة قطة على الأريكة", "مرحبا بالعالم", "القاهرة ٢٠٢٤", "كتاب عربي قديم"],
    "hebrew": ["תמונה של חתול", "שלום עולם", "ירושלים של זהב"],
    "cyrillic": ["Фотография кошки на диване", "Привет, мир!", "СЛОВО И ДЕЛО", "ёлка Ёлка"],
    "devanagari": ["बिल्ली की तस्वीर", "नमस्ते दुनिया", "हिन्दी भाषा"],
    "thai": ["ภาพแมวบนโซฟา", "สวัสดีชาวโลก", "ภาษาไทย"],
    "greek": ["ΟΔΟΣ ΣΟΦΙΑΣ", "Ελληνικά γράμματα", "ΣΙΣΥΦΟΣ", "ὈΔΥΣΣΕΎΣ"],
    "latin": ["Çà et là, naïve façade", "Straße İstanbul ǅemal ﬁnal ﬂow", "Ærøskøbing Œuvre", "Kelvin K ſtate 'ſ"],
    "mixed": ["Tokyo 東京 Москва مصر", "RTL ‏mark‎ and ‪embedding‬", "e\u0301 vs é, Å vs Å", "x\u0308\u0301\u0323y"],
}
_SCRIPT_RANGES = [(0x4E00, 0x9FFF), (0x3040, 0x30FF), (0xAC00, 0xD7A3), (0x0600, 0x06FF), (0x05D0, 0x05EA),
                  (0x0400, 0x04FF), (0x0900, 0x097F), (0x0E00, 0x0E7F), (0x0370, 0x03FF), (0x00C0, 0x024F),
                  (0x1E00, 0x1EFF), (0x0300, 0x036F), (0x1F300, 0x1FAFF), (0x2000, 0x206F), (0xFF00, 0xFFEF)]
_EMOJI = ["😀", "🐱", "👍", "👍🏽", "👩🏿‍🚀", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸", "❤️", "#️⃣", "1️⃣",
          "🧑‍🤝‍🧑", "👁️‍🗨️", "🤷🏻‍♀️", "🫠", "✔️", "☕", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"]
_ENTITIES = ["&amp;", "&#39;", "&quot;", "&nbsp;", "&lt;b&gt;", "&amp;amp;", "&amp;amp;amp;", "&#x27;",
             "&#8217;", "&hellip;", "&eacute;", "&AMP;", "&amp", "&copy2024", "&#0;", "&#xD800;", "&#1;",
             "&#128512;", "&notanentity;", "&#x1F600;", "&#150;", "&#13;", "&#10;", "&#9;", "&#x85;"]
_CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\x9b", "\u200b", "\u200d", "\ufeff", "\u2028",
             "\u2029", "\u00a0", "\u3000", "\u180e", "\u206a", "\ufff9", "\ufffe", "\U0010ffff", "\ud800",
             "\udfff", "\ud83d\ude00", "\x1b[31m", "\x1b[0m", "\x1b]0;title\x07", "\x1c", "\x1f"]
_SPECIAL = ["<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>", "<|EndOfText|>", "<end_of_text>",
            "<start_of_text>", "<|endoftext|", "|endoftext|>", "<||>", "<|endoftext|><|endoftext|>"]

_NOUNS = ("cat dog man woman child girl boy horse bicycle car bus train truck plane boat bird elephant giraffe "
          "zebra sheep cow bear pizza sandwich cake donut banana apple orange broccoli table chair couch bed "
          "laptop phone keyboard clock vase book kite umbrella skateboard surfboard frisbee bench street kitchen "
          "bathroom window building mountain beach river lake field forest city sunset tree flower house wedding "
          "dress shirt jacket shoes guitar piano painting sculpture statue lighthouse castle bridge road").split()
_ADJECTIVES = ("red blue green white black yellow small large old young happy wooden shiny empty crowded "
               "vintage modern rustic colorful snowy sunny rainy cozy tall tiny fluffy striped abstract").split()
_VERBS = ("sitting standing walking running riding eating holding looking lying playing flying parked "
          "driving sleeping jumping waiting hanging").split()
_PREPS = "on in near next to under behind beside with at above across along".split()
_PLACES = ("a table a street the beach a field the kitchen a park the snow a road the water a bed a couch "
           "the grass a sidewalk a forest the sky a window a city square").split(" a ")
_BRANDS = ["Nike", "IKEA", "Canon EOS", "Samsung Galaxy", "LEGO", "Adidas", "Sony", "Levi's", "Apple iPhone"]
_NON_ASCII_BITS = ["café", "naïve", "don’t", "it’s", "“Summer”", "™", "®", "–", "—", "é", "❤️", "😍", "°C", "½",
                   "×", "…", "São Paulo", "Zürich", "Montréal", "Ø 30 cm"]


def _caption(rng: random.Random) -> str:
    kind = rng.random()
    noun, noun2 = rng.choice(_NOUNS), rng.choice(_NOUNS)
    adj, adj2 = rng.choice(_ADJECTIVES), rng.choice(_ADJECTIVES)
    if kind < 0.55:  # COCO style
        art = "An" if adj[0] in "aeiou" else "A"
        text = f"{art} {adj} {noun} {rng.choice(_VERBS)} {rng.choice(_PREPS)} {rng.choice(_PLACES).strip()}"
        if rng.random() < 0.4:
            text += f" with a {adj2} {noun2}"
        text += rng.choice([".", ".", "", " .", "!"])
        return text if rng.random() < 0.8 else text.lower()
    if kind < 0.75:  # alt-text style
        return rng.choice([
            f"{rng.choice(_BRANDS)} {adj.title()} {noun.title()} - Size {rng.choice('SMLX')} | {adj2.title()}",
            f"Photo of a {noun} at the {noun2} festival in {rng.choice(['Paris', 'Berlin', 'Austin', 'Lagos'])}, {rng.randint(1950, 2024)}",
            f"{adj.title()} {noun} wallpaper HD {rng.choice(['1920x1080', '4K', '2560x1440'])}",
            f"Vintage {noun} #{rng.randint(1, 999)} ({rng.randint(10, 90)}% off!)",
            f"{noun.upper()} {noun2.upper()} STOCK PHOTO {rng.randint(100000, 999999)}",
            f"How to draw a {adj} {noun} step by step: {rng.randint(3, 12)} easy tips",
        ])
    if kind < 0.94:  # descriptive sentence, longer
        return (f"This is a {adj} {noun} that is {rng.choice(_VERBS)} {rng.choice(_PREPS)} {rng.choice(_PLACES).strip()} "
                f"while a {adj2} {noun2} looks on, and the {rng.choice(_NOUNS)} in the background is "
                f"{rng.choice(_ADJECTIVES)}.")
    # a few texts that need the full clean-up: non-ASCII, entities
    bits = [rng.choice(_NON_ASCII_BITS), f"{adj} {noun}", rng.choice(["&amp;", "&quot;", "&#39;", ""]), noun2]
    rng.shuffle(bits)
    return " ".join(b for b in bits if b)


def realistic_captions(n: int = 10_000, seed: int = 0) -> list[str]:
    """Caption-like texts: COCO style, shop / stock alt texts, longer sentences, ~6% non-ASCII."""
    rng = random.Random(seed)
    return [_caption(rng) for _ in range(n)]


_ONSETS = "b c d f g h j k l m n p r s t v w z bl br ch cl cr dr fl fr gl gr kl pl pr sc sh sk sl sm sn sp st str th tr tw wh".split()
_VOWELS = "a e i o u y ai ea ee ie oo ou au ei".split()
_CODAS = ["", "", "n", "r", "s", "t", "l", "ck", "ng", "nd", "st", "x", "m", "th", "rk", "sh"]


def _pseudo_word(rng: random.Random) -> str:
    word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(rng.randint(2, 4)))
    style = rng.random()
    if style < 0.15:
        word = word.title()
    elif style < 0.2:
        word += str(rng.randint(0, 9999))
    elif style < 0.25:
        word = f"{word}-{rng.choice(_NOUNS)}"
    return word


def long_tail_texts(n: int = 10_000, seed: int = 0) -> list[str]:
    """Plain texts of 6-14 words, mostly invented ones, so no word cache has seen them."""
    rng = random.Random(1_000_003 * (seed + 1))
    out = []
    for _ in range(n):
        words = [_pseudo_word(rng) if rng.random() < 0.8 else rng.choice(_NOUNS) for _ in range(rng.randint(6, 14))]
        out.append(" ".join(words))
    return out


def _mojibake(rng: random.Random, text: str) -> str:
    """Text as a wrong decoder would show it; ftfy repairs most of these."""
    data = text.encode("utf-8")
    codec = rng.choice(["cp1252", "latin-1", "cp1252", "macroman", "cp437"])
    broken = data.decode(codec, "replace")
    if rng.random() < 0.2:  # twice broken
        broken = broken.encode("utf-8").decode("cp1252", "replace")
    return broken


def _fuzz(rng: random.Random, pool: str, max_len: int) -> str:
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, max_len)))


def _generated(rng: random.Random, words: list[str], sentences: list[str], long_texts: list[str]) -> dict[str, list[str]]:
    cat: dict[str, list[str]] = {}
    pick = lambda seq: rng.choice(seq) if seq else "word"  # noqa: E731

    cat["edge"] = ["", " ", "\n", "\t \r\n ", "\u3000\u00a0\u2028", "a", "A", ".", "'", "'s", "I'M", "YOU'RE",
                   "it's", "'S", "''s", "'''", "3.14", "1,000,000", "007", "٣", "²", "½", "Ⅻ", "x²", "ǅ", "İ", "ß",
                   "ẞ", "ﬁ", "Σ", "ΑΣ", "ΑΣ Α", "ΑΣ\u00a0Α", "ΑΣ\u180eΑ", "ΑΣ\u2028Α", "ΑΣ'Α", "Ω", "K", "Å",
                   "\u0130i\u0307", "a\u0300", "\u0300", "\u00ad", "a\u00adb", "a.b", "a...b", "a_b", "a-b", "a--b",
                   "</w>", "a</w>b", "hello</w> world", "https://example.com/a?b=c&d=e#f", "user@example.com",
                   "C++ & C#", "$100", "100%", "#hashtag @mention", ":-) ;-( <3", "¯\\_(ツ)_/¯"]
    cat["special_tokens"] = []
    for s in _SPECIAL:
        cat["special_tokens"] += [s, f"a photo {s} of a cat", f"{s}{pick(words)}", f"{pick(sentences)} {s} {pick(sentences)}"]
    cat["html"] = []
    for _ in range(900):
        parts = [pick(words) for _ in range(rng.randint(1, 6))]
        for _ in range(rng.randint(1, 3)):
            parts.insert(rng.randint(0, len(parts)), rng.choice(_ENTITIES))
        glue = rng.choice([" ", "", " "])
        text = glue.join(parts)
        if rng.random() < 0.15:  # ftfy skips entities on lines after one with "<"
            text = f"<p>{pick(words)}</p>\n{text}"
        if rng.random() < 0.05:
            text += "&#" + "0" * rng.randint(1, 9000) + str(rng.randint(0, 99)) + ";"
        cat["html"].append(text)
    multilingual = [s for group in _SCRIPTS.values() for s in group]
    cat["multilingual"] = list(multilingual)
    for _ in range(1500):
        lo, hi = rng.choice(_SCRIPT_RANGES)
        chunk = "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 12)))
        cat["multilingual"].append(rng.choice([chunk, f"{pick(words)} {chunk}", f"{chunk}{chunk[::-1]} {rng.choice(multilingual)}"]))
    cat["mojibake"] = []
    sources = multilingual + [b for b in _NON_ASCII_BITS] + ["voilà le travail", "naïve café", "Ärger über Öl"]
    for _ in range(1500):
        cat["mojibake"].append(_mojibake(rng, f"{rng.choice(sources)} {pick(words)} {rng.choice(sources)}"))
    cat["emoji"] = []
    for _ in range(700):
        seq = [rng.choice(_EMOJI) for _ in range(rng.randint(1, 5))]
        cat["emoji"].append(rng.choice(["".join(seq), " ".join(seq), f"{pick(sentences)} {''.join(seq)}", f"{''.join(seq)}{pick(words)}"]))
    cat["controls"] = []
    for _ in range(1200):
        parts = [pick(words) for _ in range(rng.randint(0, 4))]
        for _ in range(rng.randint(1, 4)):
            parts.insert(rng.randint(0, len(parts)), rng.choice(_CONTROLS))
        cat["controls"].append(rng.choice(["", " "]).join(parts))
    cat["long"] = []
    for _ in range(500):
        kind = rng.random()
        if kind < 0.3 and long_texts:
            text = pick(long_texts) + "\n" + pick(long_texts)
        elif kind < 0.6:
            text = " ".join(pick(sentences) for _ in range(rng.randint(4, 20)))
        elif kind < 0.7:
            text = rng.choice("ab.!漢é😀") * rng.randint(60, 400)
        elif kind < 0.8:  # long words and URLs
            text = " ".join(pick(words) * rng.randint(3, 30) for _ in range(rng.randint(1, 5)))
        elif kind < 0.9:  # multi-line, with mojibake and entities deep inside
            lines = [pick(sentences) for _ in range(rng.randint(5, 30))]
            lines[rng.randrange(len(lines))] += " Ã©tÃ© &amp;amp; <b>"
            text = "\n".join(lines)
        else:
            text = "\n".join(" ".join(pick(words) for _ in range(rng.randint(2, 15))) for _ in range(rng.randint(20, 80)))
        cat["long"].append(text)
    ascii_pool = "".join(chr(c) for c in range(128)) + "abcdefghij  ABCD'&;#<>" * 3
    cat["ascii_fuzz"] = [_fuzz(rng, ascii_pool, 40) for _ in range(2000)]
    word_pool = "aeiou tnsrl'.,!?-&;#:/0123456789\n\t\r"
    cat["ascii_fuzz"] += [_fuzz(rng, word_pool, 60) for _ in range(1000)]
    mixed_pool = ascii_pool + "éñüß–’“”…€ΣσςİıǅÅ\u00a0\u2028\u0301\u200d漢😀🏽\ufeff\x85\x9b"
    cat["unicode_fuzz"] = [_fuzz(rng, mixed_pool, 40) for _ in range(1500)]
    cat["captions"] = realistic_captions(2000, seed=12345)
    return cat


def _build(min_size: int) -> dict[str, list[str]]:
    rng = random.Random(20240613)
    short, long_texts = debian_descriptions()
    sentences = sorted({s.strip() for text in long_texts for s in re.split(r"(?<=\.)\s+|\n", text) if len(s.strip()) > 3})
    words = sorted({w for text in short + long_texts for w in re.findall(r"[^\W\d_]{2,}", text)})
    if os.path.exists("/usr/share/dict/words"):  # a words list, when one is installed
        words = sorted(set(words) | set(Path("/usr/share/dict/words").read_text("utf-8", "replace").split()))
    if len(words) < 4000:  # no package lists either: words of Unicode character names
        names = (unicodedata.name(chr(c), "") for c in range(0x20000))
        words = sorted(set(words) | {w.lower() for name in names for w in name.split() if w.isalpha()})

    cat: dict[str, list[str]] = {}
    cat["debian_short"] = _spread(short, 7000)
    cat["debian_long"] = _spread(long_texts, 800)
    cat["debian_sentences"] = _spread(sentences, 2500)
    cat["words"] = [w if k % 5 else w.upper() for k, w in enumerate(_spread(words, 4000))]
    cat["unicode_names"] = unicode_names(rng, 3000)
    cat.update(_generated(rng, words, sentences or short, long_texts))
    total = sum(map(len, cat.values()))
    if total < min_size:  # a bare machine: top up with more names and captions
        cat["unicode_names"] += unicode_names(random.Random(7), (min_size - total) // 2 + 1)
        cat["captions"] += realistic_captions(min_size - sum(map(len, cat.values())) + 1, seed=99)
    return cat


def build_corpus(min_size: int = MIN_SIZE, use_cache: bool = True) -> dict[str, list[str]]:
    """The corpus, by category. Cached under tests/.corpus_cache/ (building reads ~50 MB of lists)."""
    sources = ["/var/lib/dpkg/status"] + sorted(glob.glob("/var/lib/apt/lists/*_Packages*"))
    stamp = [(p, os.path.getsize(p), int(os.path.getmtime(p))) for p in sources if os.path.exists(p)]
    key = json.dumps([CORPUS_VERSION, min_size, stamp, unicodedata.unidata_version])
    path = CACHE_DIR / "tokenizer_corpus.json"
    if use_cache and path.exists():
        try:
            saved = json.loads(path.read_text())
            if saved["key"] == key:
                return saved["corpus"]
        except (ValueError, KeyError):
            pass
    corpus = _build(min_size)
    if use_cache:
        CACHE_DIR.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "corpus": corpus}))  # ASCII escapes keep lone surrogates
        tmp.replace(path)
    return corpus


def flat_corpus(min_size: int = MIN_SIZE) -> list[str]:
    return [text for texts in build_corpus(min_size).values() for text in texts]


if __name__ == "__main__":
    corpus = build_corpus(use_cache="--no-cache" not in sys.argv)
    for name, texts in corpus.items():
        print(f"{name:18s} {len(texts):6d}")
    print(f"{'total':18s} {sum(map(len, corpus.values())):6d}")
