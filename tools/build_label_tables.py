#!/usr/bin/env python3
"""Build clipforge's default interrogation label tables from Princeton WordNet 3.0.

    apt-get install wordnet-base wamerican-small      # Debian / Ubuntu
    python tools/build_label_tables.py                # writes src/clipforge/tasks/label_tables/*.txt

Sources (both from Debian packages, both permissively licensed; see label_tables/PROVENANCE.md):
  - WordNet 3.0 noun and adjective databases (`wordnet-base`: /usr/share/wordnet/data.noun, data.adj,
    index.noun). Every phrase in every table is a WordNet lemma (or a lemma plus the head noun of
    the branch it came from, e.g. "bronze" under "sculpture" becomes "bronze sculpture").
  - SCOWL's small American English word list (`wamerican-small`: /usr/share/dict/american-english-small)
    is used only as a filter: in the big branches (animals, objects, places) a lemma is kept when
    each of its words is a common English word, which drops species and gadgets nobody would name.

How each table is cut out of WordNet is the ROOTS / ADJECTIVE_ATTRIBUTES data below: a synset
(by offset, checked against an expected lemma so a wrong offset fails loudly), whether to include
its hyponyms, which familiarity filter applies, and the head noun to append. The script is
deterministic: the same packages give byte-identical tables. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Optional

WORDNET_DIR = Path("/usr/share/wordnet")
COMMON_WORDS = Path("/usr/share/dict/american-english-small")
OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "clipforge" / "tasks" / "label_tables"

# "all": every synset of the branch; "common": each word of the lemma is in the SCOWL small list;
# "tagged": the sense occurs in WordNet's sense-tagged corpus (SemCor), a sign the word is in use.
Filter = Literal["all", "common", "tagged", "common+tagged"]


@dataclass(frozen=True)
class Root:
    offset: str  # WordNet 3.0 noun synset offset
    lemma: str  # a lemma that synset must have (guards against a mistyped offset)
    hyponyms: bool = True  # include the whole hyponym closure (instances included)
    keep_filter: Filter = "all"
    suffix: Optional[str] = None  # head noun appended to lemmas that do not already end with it
    include_root: bool = True
    exclude: tuple[str, ...] = ()  # offsets whose whole branch is left out
    max_depth: Optional[int] = None  # hyponym levels below the root (None: all)
    max_words: Optional[int] = None  # longest lemma kept, in words
    instances: bool = False  # named individuals (~i: "Statue of Liberty", "Bologna") are left out by default
    synonyms: bool = False  # every lemma that passes the filter ("beacon" and "lighthouse"), not only the first


@dataclass(frozen=True)
class AdjectiveAttribute:
    """Adjectives WordNet links to an attribute noun (`=` pointers), with their similar-to satellites."""

    noun_offset: str
    lemma: str
    exclude_words: tuple[str, ...] = field(default_factory=tuple)


ROOTS: dict[str, list[Root]] = {
    # How the picture was made: painting, drawing, print, photograph, sculpture, craft techniques.
    "mediums": [
        Root("03876519", "painting", suffix="painting"),  # painting (the artefact): oil painting, mural, ...
        Root("00936620", "painting", suffix="painting"),  # painting (the technique): fresco, impasto, ...
        Root("03234306", "drawing", suffix="drawing", max_depth=1),  # charcoal, pen-and-ink, silverpoint, sketch, ...
        Root("07003119", "drawing", hyponyms=False),
        Root("04003597", "print", suffix="print"),  # engraving, linocut, lithograph, silkscreen, ...
        Root("00937476", "printmaking"),  # printmaking: engraving, serigraphy, lithography, aquatint
        Root("03925226", "photograph", suffix="photograph", max_depth=1,
             # medical and scientific images, copies and dots are not ways of making a picture
             exclude=("04042358", "04272638", "03759114", "03924811", "03787904", "03927091")),
        Root("00903559", "photography", hyponyms=False),
        Root("04157320", "sculpture", suffix="sculpture", max_depth=1),  # bronze, bust, carving, marble, relief, ...
        Root("03067912", "collage"),  # collage, photomontage
        Root("03787759", "mosaic"),
        Root("03816849", "needlework", max_depth=1),  # embroidery, crochet, knitting (not every stitch)
        Root("04393404", "tapestry", hyponyms=False),
        Root("14882793", "stained_glass", hyponyms=False),
        Root("03084647", "computer_graphics"),  # computer graphics, clip art
        Root("03453696", "graphic", hyponyms=False),  # computer graphic
        Root("03155055", "cyberart", hyponyms=False),
        Root("03170292", "decoupage", hyponyms=False),
        Root("03204810", "diptych", hyponyms=False),
        Root("04485423", "triptych", hyponyms=False),
        Root("00936456", "origami", hyponyms=False),
        Root("00935247", "ceramics", hyponyms=False),
        Root("03992703", "pottery", hyponyms=False),
        Root("06403969", "calligraphy", hyponyms=False),
        Root("06780678", "cartoon"),  # cartoon, comic strip
        Root("06780069", "caricature", hyponyms=False),
        Root("03561345", "illustration", hyponyms=False),
        Root("03016056", "chiaroscuro", hyponyms=False),
        Root("03884072", "panorama", hyponyms=False),
        Root("02845425", "bitmap", hyponyms=False),
        Root("04314216", "stencil", hyponyms=False),
        Root("06793426", "poster", hyponyms=False),
        # Artists' materials named as such (the branch "paint" also holds house paint and antifouling paint).
        Root("02677136", "acrylic", hyponyms=False, suffix="paint"),
        Root("03844233", "oil_paint", hyponyms=False),
        Root("14991319", "watercolor", hyponyms=False, suffix="paint"),
        Root("03285578", "encaustic", hyponyms=False, suffix="paint"),
        Root("03212698", "distemper", hyponyms=False, suffix="paint"),
        Root("03342015", "finger_paint", hyponyms=False),
        Root("04287898", "spray_paint", hyponyms=False),
        Root("03449217", "gouache", hyponyms=False),
        Root("04407257", "tempera", hyponyms=False),
        Root("04974575", "pastel", hyponyms=False),
        Root("03128248", "crayon", hyponyms=False),
        Root("03003091", "chalk", hyponyms=False),
        Root("03007824", "charcoal", hyponyms=False),
    ],
    # Art movements, schools, historical styles and genres of art and architecture.
    "movements": [
        Root("08466643", "art_movement", include_root=False,
             exclude=("08468499", "08468721")),  # imagism and the lake poets are literary movements
        Root("04929422", "artistic_style", include_root=False, exclude=("04929976",)),  # "treatment"
        Root("03434943", "genre", include_root=False),  # abstract art, folk art, naive art, pointillism, ...
        Root("05841351", "architectural_style", include_root=False),  # Bauhaus, Gothic, Romanesque, ...
        Root("15259812", "Renaissance", hyponyms=False),  # the periods named after their art
        Root("15259076", "Baroque", hyponyms=False),
        Root("00935005", "arts_and_crafts", hyponyms=False),
        Root("10465248", "Pre-Raphaelite", hyponyms=False),
    ],
    # What the picture shows: animals, plants, people, food, objects, buildings, places, nature, sky.
    "subjects": [
        # Animals: one-word common names (cat, owl, zebra), plus any name in use in SemCor (polar bear).
        Root("00015388", "animal", keep_filter="common", max_words=1),
        Root("00015388", "animal", keep_filter="common+tagged"),
        Root("11669921", "flower", keep_filter="common+tagged"),
        Root("13104059", "tree", keep_filter="common+tagged"),
        Root("09622049", "juvenile", keep_filter="common+tagged"),  # child, baby, teenager, ...
        Root("09605289", "adult", keep_filter="common+tagged", max_depth=2),  # man, woman, elder, ...
        Root("09820263", "athlete", keep_filter="common"),
        Root("10340312", "musician", keep_filter="common"),
        Root("09989502", "dancer", keep_filter="common"),
        Root("10622053", "soldier", keep_filter="common"),
        Root("09616922", "entertainer", keep_filter="common+tagged"),
        Root("10605985", "skilled_worker", keep_filter="common+tagged"),
        Root("07557434", "dish", keep_filter="common"),
        Root("07705931", "edible_fruit", keep_filter="common"),
        Root("07707451", "vegetable", keep_filter="common"),
        Root("07622061", "baked_goods", keep_filter="common"),
        Root("07609840", "dessert", keep_filter="common"),
        Root("07881800", "beverage", keep_filter="common+tagged"),
        Root("04524313", "vehicle", keep_filter="common"),
        Root("03405725", "furniture", keep_filter="common"),
        Root("03800933", "musical_instrument", keep_filter="common"),
        Root("03051540", "clothing", keep_filter="common+tagged"),
        Root("03381126", "footwear", keep_filter="common"),
        Root("03502509", "headdress", keep_filter="common"),
        Root("03597469", "jewelry", keep_filter="common"),
        Root("04565375", "weapon", keep_filter="common"),
        Root("03964744", "plaything", keep_filter="common"),
        Root("03621049", "kitchen_utensil", keep_filter="common"),
        Root("04381994", "tableware", keep_filter="common"),
        Root("03636248", "lamp", keep_filter="common"),
        Root("03528263", "home_appliance", keep_filter="common"),
        Root("02942699", "camera", keep_filter="common"),
        Root("03082979", "computer", keep_filter="common"),
        Root("02913152", "building", keep_filter="common"),
        Root("03259505", "dwelling", keep_filter="common"),
        Root("02898711", "bridge", keep_filter="common"),
        Root("04460130", "tower", keep_filter="common"),
        Root("03743902", "monument", keep_filter="common"),
        Root("04105893", "room", keep_filter="common"),
        Root("04334599", "street", keep_filter="common"),
        Root("03417345", "garden", keep_filter="common"),
        Root("08615149", "park", keep_filter="common"),
        Root("08524735", "city", keep_filter="common"),
        Root("08226699", "village", hyponyms=False),
        Root("09287968", "geological_formation", keep_filter="common"),  # mountain, cliff, cave, beach, ...
        Root("09225146", "body_of_water", keep_filter="common"),  # lake, river, sea, waterfall, ...
        Root("08438533", "forest", keep_filter="common"),
        Root("08505573", "desert", hyponyms=False),
        Root("09316454", "island", hyponyms=False),
        Root("08646902", "landscape", hyponyms=False),
        Root("09436708", "sky", hyponyms=False),
        Root("09239740", "celestial_body", keep_filter="common", include_root=False),  # sun, moon, star, planet
        Root("11425580", "atmospheric_phenomenon", keep_filter="common"),  # storm, rainbow, cloud, fog, ...
    ],
    # Colour names (styles also get adjectives, below).
    "styles": [
        Root("04959672", "chromatic_color", keep_filter="common", include_root=False),
        Root("04960079", "achromatic_color", keep_filter="common", include_root=False),
    ],
}

# How the picture looks: adjectives WordNet attaches to visual attributes.
ADJECTIVE_ATTRIBUTES: list[AdjectiveAttribute] = [
    AdjectiveAttribute("04956594", "color"),  # colored / colorless, with vivid, pastel, monochrome, ...
    AdjectiveAttribute("05193338", "vividness"),
    AdjectiveAttribute("04975122", "hue"),
    AdjectiveAttribute("04951373", "lightness"),  # light / dark
    AdjectiveAttribute("05018103", "brightness"),  # bright / dull
    AdjectiveAttribute("04683814", "beauty"),
    AdjectiveAttribute("04686003", "attractiveness"),
    AdjectiveAttribute("04946877", "texture"),  # rough / smooth
    AdjectiveAttribute("05064037", "shape"),  # curved / angular, round, square, ...
    AdjectiveAttribute("04766275", "complexity"),  # simple / complex, ornate, ...
    AdjectiveAttribute("04701460", "clearness"),  # clear / cloudy
    AdjectiveAttribute("05011790", "temperature"),  # warm / cool
    AdjectiveAttribute("04630689", "cheerfulness"),  # cheerful / gloomy
    AdjectiveAttribute("04626705", "drama"),
    AdjectiveAttribute("05050668", "modernity"),  # modern / old-fashioned
    AdjectiveAttribute("04762134", "abstractness"),  # abstract / concrete
    AdjectiveAttribute("13955461", "realism"),
    AdjectiveAttribute("05098942", "size"),  # large / small
    AdjectiveAttribute("05074374", "waviness"),
]


# ---- reading WordNet's database files (wndb(5WN)) -------------------------------------------------


@dataclass(frozen=True)
class Synset:
    offset: str
    kind: str  # n, a (head adjective) or s (satellite)
    lemmas: tuple[str, ...]
    pointers: tuple[tuple[str, str, str], ...]  # (symbol, target offset, target pos)


def _read_data(path: Path) -> dict[str, Synset]:
    synsets: dict[str, Synset] = {}
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.partition(" | ")[0].split()
            offset, kind, n_words = fields[0], fields[2], int(fields[3], 16)
            lemmas = tuple(fields[4 + 2 * i] for i in range(n_words))
            i = 4 + 2 * n_words
            n_pointers = int(fields[i])
            pointers = tuple((fields[i + 1 + 4 * k], fields[i + 2 + 4 * k], fields[i + 3 + 4 * k]) for k in range(n_pointers))
            synsets[offset] = Synset(offset, kind, lemmas, pointers)
    return synsets


@functools.lru_cache(maxsize=None)
def nouns() -> dict[str, Synset]:
    return _read_data(WORDNET_DIR / "data.noun")


@functools.lru_cache(maxsize=None)
def adjectives() -> dict[str, Synset]:
    return _read_data(WORDNET_DIR / "data.adj")


@functools.lru_cache(maxsize=None)
def tagged_senses() -> frozenset[tuple[str, str]]:
    """(lemma, synset offset) pairs whose sense occurs in SemCor (index.noun's tagsense_cnt)."""
    pairs = set()
    with open(WORDNET_DIR / "index.noun", encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.split()
            lemma, n_synsets, n_pointer_kinds = fields[0], int(fields[2]), int(fields[3])
            n_tagged = int(fields[5 + n_pointer_kinds])
            offsets = fields[6 + n_pointer_kinds : 6 + n_pointer_kinds + n_synsets]
            pairs.update((lemma.lower(), o) for o in offsets[:n_tagged])  # senses are listed by frequency
    return frozenset(pairs)


@functools.lru_cache(maxsize=None)
def common_words() -> frozenset[str]:
    return frozenset(COMMON_WORDS.read_text(encoding="utf-8").split())


# ---- turning branches into phrases ---------------------------------------------------------------


def _words(lemma: str) -> list[str]:
    return lemma.replace("-", "_").split("_")


def _is_common(lemma: str) -> bool:
    words = common_words()
    return all(w in words or w.lower() in words for w in _words(lemma) if w)


def _keeps(lemma: str, offset: str, keep_filter: Filter) -> bool:
    if keep_filter == "all":
        return True
    common = _is_common(lemma)
    tagged = (lemma.lower(), offset) in tagged_senses()
    return {"common": common, "tagged": tagged, "common+tagged": common and tagged}[keep_filter]


# A lemma ending in one of these already says what kind of picture it is ("photographic print").
HEAD_NOUNS = frozenset({"painting", "drawing", "print", "photograph", "picture", "sculpture", "art", "paint", "diagram"})

# Lemmas that are ambiguous out of their branch ("order" is the Greek architectural order here).
DROP_PHRASES: dict[str, frozenset[str]] = {
    "movements": frozenset({"order", "perpendicular", "landscape"}),
}


def phrase(lemma: str, suffix: Optional[str] = None) -> str:
    """WordNet lemma -> phrase: underscores to spaces, adjective markers dropped, head noun appended."""
    text = lemma.split("(")[0].replace("_", " ").strip()  # "galore(ip)" -> "galore"
    if suffix and text.lower().split()[-1] not in HEAD_NOUNS:
        text = f"{text} {suffix}"
    return text


def _branch(root: Root) -> list[str]:
    """Offsets of the root's synsets in breadth-first order (the root first when included)."""
    synsets = nouns()
    if root.offset not in synsets or root.lemma.lower() not in {w.lower() for w in synsets[root.offset].lemmas}:
        raise SystemExit(f"WordNet synset {root.offset} is not {root.lemma!r}: is this WordNet 3.0?")
    kinds = ("~", "~i") if root.instances else ("~",)
    max_depth = (root.max_depth if root.max_depth is not None else 1_000) if root.hyponyms else 0
    order, seen, queue = [], {root.offset}, [(root.offset, 0)]
    while queue:
        offset, depth = queue.pop(0)
        order.append(offset)
        if depth == max_depth:
            continue
        for symbol, target, pos in synsets[offset].pointers:
            if pos == "n" and symbol in kinds and target not in seen and target not in root.exclude:
                seen.add(target)
                queue.append((target, depth + 1))
    return order if root.include_root else order[1:]


def noun_phrases(roots: Iterable[Root]) -> list[str]:
    out = []
    for root in roots:
        for offset in _branch(root):
            # The first lemma that passes the filter names the synset (WordNet lists the usual one first).
            lemmas = [w for w in nouns()[offset].lemmas if _keeps(w, offset, root.keep_filter)
                      and (root.max_words is None or len(_words(w)) <= root.max_words)]
            out.extend(phrase(w, root.suffix) for w in (lemmas if root.synonyms else lemmas[:1]))
    return out


def adjective_phrases(attributes: Iterable[AdjectiveAttribute]) -> list[str]:
    adj = adjectives()
    wanted = {a.noun_offset for a in attributes}
    for a in attributes:
        if a.lemma not in nouns()[a.noun_offset].lemmas:
            raise SystemExit(f"WordNet synset {a.noun_offset} is not {a.lemma!r}: is this WordNet 3.0?")
    heads = [s for s in adj.values() if any(sym == "=" and pos == "n" and t in wanted for sym, t, pos in s.pointers)]
    out = []
    for head in heads:
        members = [head] + [adj[t] for sym, t, pos in head.pointers if sym == "&" and pos in "as" and t in adj]
        for synset in members:
            lemma = next((w for w in synset.lemmas if _is_common(w.split("(")[0])), None)
            if lemma is not None:
                out.append(phrase(lemma))
    return out


def unique(phrases: Iterable[str]) -> list[str]:
    """Case-insensitive de-duplication, then a stable case-insensitive sort (for reviewable diffs)."""
    seen: dict[str, str] = {}
    for p in phrases:
        seen.setdefault(p.lower(), p)
    return sorted(seen.values(), key=lambda p: (p.lower(), p))


# Tables that list every common lemma of a synset: "lighthouse" matters as much as "beacon".
SYNONYM_TABLES = frozenset({"subjects"})


def build() -> dict[str, list[str]]:
    tables = {
        name: noun_phrases(dataclasses.replace(r, synonyms=True) if name in SYNONYM_TABLES else r for r in roots)
        for name, roots in ROOTS.items()
    }
    tables["styles"] += adjective_phrases(ADJECTIVE_ATTRIBUTES)
    return {name: unique(p for p in phrases if p not in DROP_PHRASES.get(name, ())) for name, phrases in tables.items()}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help=f"where to write NAME.txt (default {OUT_DIR})")
    args = parser.parse_args(argv)
    for path in (WORDNET_DIR / "data.noun", COMMON_WORDS):
        if not path.exists():
            print(f"{path} is missing: apt-get install wordnet-base wamerican-small", file=sys.stderr)
            return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, phrases in build().items():
        (args.out_dir / f"{name}.txt").write_text("".join(p + "\n" for p in phrases), encoding="utf-8")
        print(f"{name}: {len(phrases)} phrases -> {args.out_dir / (name + '.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
