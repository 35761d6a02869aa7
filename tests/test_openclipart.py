"""The OpenClipArt builder: on a small fake package tree (metadata, captions, labels, splits,
transparency, bad files, idempotence, .deb input, CLI) and on a 200-pair subset of the real packages.

The real packages are cached in the clipforge cache, shared with the image fixtures' corpus; if they cannot
be fetched the test fails with apt's message (building this data set is the point of the test).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.datasets import openclipart as oc
from clipforge.datasets import openclipart_captions as captions

VERSION = "1:0.18+dfsg-19"
COPYRIGHT = "It was downloaded from http://www.openclipart.org\n\n creative commons Public Domain Dedication\n"


def svg_text(
    title: str = "", description: str = "", keywords: tuple[str, ...] = (), creator: str = "Jane Doe",
    license: str = "http://web.resource.org/cc/PublicDomain",
) -> str:
    """An SVG with the metadata block OpenClipArt 0.18 files carry (Inkscape 0.4x, cc:Work)."""
    items = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:cc="http://web.resource.org/cc/"
     xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
     width="100" height="100">
  <metadata>
    <rdf:RDF>
      <cc:Work rdf:about="">
        <dc:title>{title}</dc:title>
        <dc:description>{description}</dc:description>
        <dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>
        <dc:publisher><cc:Agent rdf:about="http://www.openclipart.org/"><dc:title>Open Clip Art Library</dc:title></cc:Agent></dc:publisher>
        <dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator>
        <dc:rights><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:rights>
        <cc:license rdf:resource="{license}"/>
      </cc:Work>
    </rdf:RDF>
  </metadata>
  <rect width="10" height="10"/>
</svg>
"""


def disc(size: tuple[int, int], colour=(200, 30, 30)) -> Image.Image:
    """A coloured disc on a fully transparent background whose hidden colour is black."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    inside = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 3) ** 2
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[inside] = (*colour, 255)
    return Image.fromarray(rgba, "RGBA")


# (path under png/ and svg/ without extension, metadata); images are discs unless noted.
ENTRIES = {
    "animals/mammals/cat_01": dict(title="Sleeping Cat", description="A grey cat asleep on a cushion.", keywords=("animal", "cat", "mammal", "hash")),
    "animals/dog_jane_doe_01": dict(title="Clipart by Jane Doe - dog_01", keywords=("dog", "Jane Doe", "pet")),
    "animals/birds/owl": dict(title="Owl", description="jane@example.org", keywords=("bird", "HASH(0x8677e2c)", "night")),
    "food/fruit/apple": dict(title="Red &amp;quot;Apple&amp;quot;", keywords=("food", "fruit")),
    "food/pie": dict(title="Part of the Flat Icon Collection (Wed Aug 25 23:29:46 2004)", keywords=("food", "dessert", "lemon_theme_icon")),
    "computer/icons/flat-theme/action/undo": dict(title="", keywords=()),
    "unsorted/Anatra": dict(title="", keywords=()),
    "unsorted/vaso": dict(title="Vaso", keywords=("unsorted",)),
    "animals/bad/tiny_flag": dict(title="Tiny flag", keywords=("flag",)),
    "animals/bad/broken_png": dict(title="Broken", keywords=("people",)),
    "animals/bad/broken_svg": dict(title="Broken SVG", keywords=("people",)),
    "animals/bad/gpl": dict(title="Firewall", keywords=("network",), license="http://creativecommons.org/licenses/GPL/2.0/"),
}


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    """An unpacked fake of both packages: /usr/share/openclipart/{png,svg} and /usr/share/doc."""
    root = tmp_path_factory.mktemp("fake_openclipart")
    png_dir, svg_dir = root / oc.PNG_SUBDIR, root / oc.SVG_SUBDIR
    for i, (rel, meta) in enumerate(ENTRIES.items()):
        (png_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (svg_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        svg = svg_text(**meta) if rel != "animals/bad/broken_svg" else "<svg><metadata><unclosed></svg>"
        (svg_dir / f"{rel}.svg").write_text(svg, encoding="utf-8")
        if rel == "animals/bad/tiny_flag":
            Image.new("RGB", (6, 3), (0, 90, 200)).save(png_dir / f"{rel}.png")
        elif rel == "animals/bad/broken_png":
            good = io.BytesIO()
            disc((64, 64)).save(good, "PNG")
            (png_dir / f"{rel}.png").write_bytes(good.getvalue()[:200])  # truncated
        elif rel == "food/fruit/apple":
            disc((200, 50), (10, 160, 10)).save(png_dir / f"{rel}.png")  # wide: padded top and bottom
        elif rel == "computer/icons/flat-theme/action/undo":
            disc((48, 48)).convert("P").save(png_dir / f"{rel}.png")  # palette mode
        else:
            disc((80 + 7 * i, 80)).save(png_dir / f"{rel}.png")
    # The package symlinks identical drawings into several categories: one image, kept once.
    for tree, ext in ((png_dir, "png"), (svg_dir, "svg")):
        (tree / "food/cat_alias").parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f"../animals/mammals/cat_01.{ext}", tree / f"food/cat_alias.{ext}")
    os.symlink("missing.png", png_dir / "animals/bad/dangling.png")
    for package in oc.PACKAGES:
        doc = root / "usr/share/doc" / package
        doc.mkdir(parents=True)
        (doc / "copyright").write_text(COPYRIGHT, encoding="utf-8")
        with gzip.open(doc / "changelog.Debian.gz", "wt") as f:
            f.write(f"openclipart ({VERSION}) unstable; urgency=medium\n\n  * QA upload\n")
    return root


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def all_records(out: Path) -> dict[str, dict]:
    return {r["source"]: dict(r, split=s) for s in oc.SPLITS for r in read_jsonl(out / f"{s}.jsonl")}


# ---- metadata and captions ------------------------------------------------------------------------


def test_read_svg_metadata(tmp_path):
    path = tmp_path / "flask.svg"
    path.write_text(svg_text("Chemistry Flask", "A flask with the &amp;quot;required&amp;quot; bubbles.",
                             ("chemistry", "science"), creator="Matthew Wardrop"), encoding="utf-8")
    meta = captions.read_svg_metadata(path)
    assert meta.title == "Chemistry Flask"  # the Work's own title, not the publisher's or the creator's
    assert meta.keywords == ["chemistry", "science"]
    assert meta.creator == "Matthew Wardrop"
    assert meta.license == "http://web.resource.org/cc/PublicDomain"
    assert captions.make_caption(meta) == 'Chemistry Flask. A flask with the "required" bubbles. science'  # "chemistry" repeats the title
    (tmp_path / "plain.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>", encoding="utf-8")
    assert captions.read_svg_metadata(tmp_path / "plain.svg") == captions.SvgMetadata()


@pytest.mark.parametrize(
    "meta, category, expected",
    [
        # collection names, file names, Perl references, e-mail addresses and noise tags are dropped
        (dict(title="Part of the Flat Icon Collection (Wed Aug 25 23:29:46 2004)", keywords=["hash", "", "action", "computer", "icons", "theme"]),
         "computer/icons", "action, computer, icons"),
        (dict(title="Clipart by Nicu Buculei - arrow08_4", keywords=["shape", "arrow"]), "shapes", "shape, arrow"),
        (dict(title="Clipart by Michael Wheeler - United States - Maryland", keywords=["flag", "0x9c7e2ec", "north_america"]),
         "", "United States - Maryland. flag, north america"),
        (dict(title="PC connectors", description="HASH(0x8677e2c)", keywords=["hash(0x866e640)", "computer"]), "", "PC connectors. computer"),
        (dict(title="LED Rectangular V (Red)", description="jean.victor.balin@gmail.com", keywords=["led", "shape"]), "", "LED Rectangular V (Red). shape"),
        (dict(title="Cavallo", keywords=["architetto francesco rollandin", "horse"], creator="Architetto Francesco Rollandin"), "", "Cavallo. horse"),
        (dict(title="AIGA_Symbol_Signs", keywords=["symbol"]), "", "AIGA Symbol Signs"),
        (dict(title="Homes Clipart", keywords=["house", "home", "homes"]), "", "Homes. house"),
        (dict(title="Mhooo!", keywords=["mammal", "cow"]), "", "Mhooo! mammal, cow"),
        (dict(title="Bull", description="Bull.", keywords=["bull"]), "", "Bull"),
        # nothing usable: the category path, except for the "unsorted" bin
        (dict(title="", keywords=[]), "signs_and_symbols/flags", "signs and symbols, flags"),
        (dict(title="Various Cliparts", keywords=["unsorted"]), "unsorted", ""),
    ],
)
def test_make_caption_cleans_metadata(meta, category, expected):
    assert captions.make_caption(captions.SvgMetadata(**meta), category) == expected


def test_make_caption_length_is_capped():
    meta = captions.SvgMetadata(
        title="International maritime signal flag foxtrot",
        description="The Semaphore flag signaling system is an alphabet signalling system based on the waving of a pair of hand-held flags. More.",
        keywords=[f"keyword{c}" for c in "abcdefghij"],
    )
    caption = captions.make_caption(meta)
    assert len(caption) <= captions.MAX_CAPTION_CHARS
    assert caption.startswith("International maritime signal flag foxtrot. The Semaphore flag")
    assert "More" not in caption  # first sentence only
    long_sentence = captions.SvgMetadata(title="Flag", description="word " * 60)
    assert captions.make_caption(long_sentence) == "Flag"  # a cut-off fragment is dropped, not kept


def test_caption_variants_phrase_the_same_metadata_differently():
    meta = captions.SvgMetadata(title="Sleeping Cat", description="A cat asleep on a rug", keywords=["cat", "pet", "rug"])
    caption = captions.with_category(captions.make_caption(meta, "animals/mammals"), "animals/mammals")
    parts = captions.caption_parts(meta)
    variants = captions.caption_variants(caption, parts, "animals/mammals", key="/png/animals/mammals/cat.png")
    assert variants[0] == caption and len(variants) == captions.N_CAPTION_VARIANTS == len(set(variants))
    assert variants == captions.caption_variants(caption, parts, "animals/mammals", key="/png/animals/mammals/cat.png")
    assert variants != captions.caption_variants(caption, parts, "animals/mammals", key="/png/other.png")
    # every phrasing names the category; each other word comes from the metadata
    assert all("animals" in v for v in variants)
    allowed = set(" ".join([caption, "clip art of a picture an image sketch mammals", *parts["keywords"],
                            parts["title"], parts["description"]]).lower().replace(",", " ").replace(".", " ").split())
    assert all(set(v.lower().replace(",", " ").replace(".", " ").split()) <= allowed for v in variants)
    # no category (unsorted): the variants still come from the metadata alone
    bare = captions.caption_variants("Sleeping Cat", parts, "unsorted", key="k")
    assert bare[0] == "Sleeping Cat" and not any("unsorted" in v for v in bare)


def test_split_of_is_a_stable_80_10_10_hash():
    assert oc.split_of("/usr/share/openclipart/png/animals/mammals/cat_01.png") == oc.split_of(
        "/usr/share/openclipart/png/animals/mammals/cat_01.png"
    )
    splits = [oc.split_of(f"/usr/share/openclipart/png/x/{i}.png") for i in range(5000)]
    fractions = {s: splits.count(s) / len(splits) for s in oc.SPLITS}
    assert abs(fractions["train"] - 0.8) < 0.03 and abs(fractions["val"] - 0.1) < 0.02 and abs(fractions["test"] - 0.1) < 0.02


# ---- the builder on the fake tree ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_build(fake_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("fake_build")
    summary = oc.build(out, source=fake_root, image_size=64, progress=False, workers=0, min_class_images=2,
                       cache_dir=tmp_path_factory.mktemp("cache"))
    return out, summary


def test_build_records_labels_and_classes(fake_build):
    out, summary = fake_build
    records = all_records(out)
    base = "/usr/share/openclipart/png/"
    assert set(records) == {
        base + p + ".png" for p in ("animals/mammals/cat_01", "animals/dog_jane_doe_01", "animals/birds/owl", "food/fruit/apple",
                                    "food/pie", "computer/icons/flat-theme/action/undo", "unsorted/vaso")
    }  # the alias, the no-caption "unsorted" drawing and the bad files are not pairs
    classes = json.loads((out / "classes.json").read_text())
    # Categories with >= 2 drawings in the package (bad ones count: classes do not depend on decoding).
    assert classes["categories"] == ["animals", "food"]
    assert classes["classnames"] == ["animals", "food and drink"]
    assert all("{}" in t for t in classes["templates"]) and classes["provenance"]
    assert records[base + "animals/birds/owl.png"]["label"] == 0
    assert records[base + "food/pie.png"]["label"] == 1
    assert records[base + "computer/icons/flat-theme/action/undo.png"]["label"] == -1  # category below the threshold
    assert records[base + "unsorted/vaso.png"]["label"] == -1  # never a class
    # The category path comes first, the class's readable name for its top level (with_category).
    assert records[base + "animals/mammals/cat_01.png"]["caption"] == (
        "clip art of animals, mammals. Sleeping Cat. A grey cat asleep on a cushion. animal, mammal"
    )
    assert records[base + "animals/dog_jane_doe_01.png"]["caption"] == "clip art of animals. dog, pet"  # file-name title and author tag dropped
    assert records[base + "food/fruit/apple.png"]["caption"] == 'clip art of food and drink, fruit. Red "Apple". food, fruit'
    assert records[base + "food/pie.png"]["caption"] == "clip art of food and drink. food, dessert"
    # No metadata but the category: the category alone, said once.
    assert records[base + "computer/icons/flat-theme/action/undo.png"]["caption"] == "clip art of computer icons, icons, flat theme, action"
    assert records[base + "unsorted/vaso.png"]["caption"] == "Vaso"  # "unsorted" is no category worth naming
    for source, r in records.items():
        assert r["split"] == oc.split_of(source)
        assert r["image"] == "images/" + source[len(base):]
        assert "_" not in r["caption"] and r["caption"] == r["caption"].strip()
        assert set(r) >= {"image", "caption", "label", "source"}
    assert summary.n_pairs == 7 and sum(summary.splits.values()) == 7
    assert summary.classnames == classes["classnames"] and summary.n_classes == 2
    assert summary.images_per_class == {"animals": 3, "food and drink": 2}
    assert summary.n_duplicates_merged == 1


def test_build_skips_and_counts_bad_files(fake_build):
    _, summary = fake_build
    assert summary.skipped == {"bad_svg": 1, "truncated": 1, "too_small": 1, "no_caption": 1, "broken_link": 1, "not_public_domain": 1}
    assert any("broken_svg" in e for e in summary.skipped_examples["bad_svg"])
    text = summary.format()
    assert "pairs: 7" in text and "classes: 2" in text and "truncated 1" in text


def test_build_images_are_square_rgb_with_transparency_on_white(fake_build):
    out, _ = fake_build
    for path in (out / "images").rglob("*.png"):
        with Image.open(path) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    owl = np.asarray(Image.open(out / "images/animals/birds/owl.png")).astype(int)
    assert (owl[0] == 255).all() and (owl[:, 0] == 255).all()  # transparent (hidden black) -> white, no dark fringe
    assert abs(owl[32, 32] - [200, 30, 30]).max() <= 2  # the drawing itself is unchanged
    apple = np.asarray(Image.open(out / "images/food/fruit/apple.png")).astype(int)  # 200x50 -> 64x16, centred
    assert (apple[:20] == 255).all() and (apple[-20:] == 255).all()
    assert abs(apple[32, 32] - [10, 160, 10]).max() <= 4
    # Fringe pixels blend towards white, never towards the hidden black of transparent pixels.
    assert owl.min() >= 20  # (bicubic rings a little; blending with black would give ~0-15)


def test_license_and_provenance(fake_build):
    out, summary = fake_build
    text = (out / "LICENSE_AND_PROVENANCE.md").read_text(encoding="utf-8")
    assert "creative commons Public Domain Dedication" in text
    assert f"`openclipart-png` version `{VERSION}`" in text and f"`openclipart-svg` version `{VERSION}`" in text
    assert "http://web.resource.org/cc/PublicDomain`: 7 images" in text
    assert summary.packages == {"openclipart-png": VERSION, "openclipart-svg": VERSION}


def test_build_is_idempotent(fake_root, tmp_path):
    cache = tmp_path / "cache"
    first = oc.build(tmp_path / "out", source=fake_root, image_size=32, progress=False, workers=0, cache_dir=cache)
    stamp = (tmp_path / "out/train.jsonl").stat().st_mtime_ns
    again = oc.build(tmp_path / "out", source=fake_root, image_size=32, progress=False, workers=0, cache_dir=cache)
    assert again.up_to_date and not first.up_to_date
    assert (tmp_path / "out/train.jsonl").stat().st_mtime_ns == stamp
    assert again.n_pairs == first.n_pairs and again.splits == first.splits
    # A missing image is redone; the others are reused.
    (tmp_path / "out/images/animals/birds/owl.png").unlink()
    redo = oc.build(tmp_path / "out", source=fake_root, image_size=32, progress=False, workers=0, cache_dir=cache)
    assert not redo.up_to_date and redo.n_images_reused == first.n_pairs - 1
    assert (tmp_path / "out/images/animals/birds/owl.png").is_file()
    # Another size rebuilds every image.
    bigger = oc.build(tmp_path / "out", source=fake_root, image_size=48, progress=False, workers=0, cache_dir=cache)
    assert bigger.n_images_reused == 0
    with Image.open(tmp_path / "out/images/animals/birds/owl.png") as im:
        assert im.size == (48, 48)


def _write_deb(tree: Path, package: str, deb: Path, evil: bool = False) -> None:
    """A minimal .deb (ar: debian-binary, control.tar.xz, data.tar.xz) holding one fake package's files."""
    data = io.BytesIO()
    prefixes = (f"usr/share/openclipart/{package.split('-')[1]}", f"usr/share/doc/{package}")
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for path in sorted(p for prefix in prefixes for p in (tree / prefix).rglob("*")):
            tar.add(path, arcname="./" + path.relative_to(tree).as_posix(), recursive=False)
        if evil:  # members that must never be written outside the root
            info = tarfile.TarInfo("../escaped.txt")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
            link = tarfile.TarInfo("./usr/share/evil_link")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode="w:xz"):
        pass
    with open(deb, "wb") as f:
        f.write(b"!<arch>\n")
        for name, payload in (("debian-binary", b"2.0\n"), ("control.tar.xz", control.getvalue()), ("data.tar.xz", data.getvalue())):
            f.write(f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}`\n".encode())
            f.write(payload + (b"\n" if len(payload) % 2 else b""))


def test_build_from_deb_files_and_cli(fake_root, fake_build, tmp_path):
    debs = tmp_path / "debs"
    debs.mkdir()
    _write_deb(fake_root, "openclipart-png", debs / "openclipart-png_1%3a0.18+dfsg-19_all.deb", evil=True)
    _write_deb(fake_root, "openclipart-svg", debs / "openclipart-svg_1%3a0.18+dfsg-19_all.deb")
    from clipforge.cli import dataset

    parser = argparse.ArgumentParser()
    dataset.add_parser(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(["dataset", "openclipart", "--out", str(out), "--source", str(debs), "--image-size", "64",
                              "--workers", "0", "--min-class-images", "2", "--cache-dir", str(tmp_path / "cache")])
    assert args.func(args) == 0
    fake_out, _ = fake_build
    assert all_records(out) == all_records(fake_out)  # same pairs, captions, labels and splits as from the tree
    assert (out / "LICENSE_AND_PROVENANCE.md").read_text() == (fake_out / "LICENSE_AND_PROVENANCE.md").read_text()
    unpacked = tmp_path / "cache/unpacked"
    assert not list(tmp_path.rglob("escaped.txt")) and not list(unpacked.rglob("evil_link"))
    assert sorted(p.name for p in unpacked.iterdir()) == ["openclipart-png_1%3a0.18+dfsg-19_all", "openclipart-svg_1%3a0.18+dfsg-19_all"]


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(oc.SourceUnavailable, match="neither openclipart .deb files"):
        oc.build(tmp_path / "out", source=tmp_path, progress=False, cache_dir=tmp_path / "cache")
    with pytest.raises(oc.SourceUnavailable, match="does not exist"):
        oc.locate_sources(tmp_path / "nope", tmp_path / "cache")


# ---- the real packages --------------------------------------------------------------------------------


@pytest.mark.slow  # builds from the real Debian packages
def test_real_packages_subset(tmp_path):
    """200 pairs from Debian's real openclipart-png / openclipart-svg (fetched once into the clipforge cache)."""
    from image_fixtures import OPENCLIPART_CACHE

    summary = oc.build(tmp_path / "oc", limit=200, progress=False, workers=0, cache_dir=OPENCLIPART_CACHE)
    assert set(summary.packages) == set(oc.PACKAGES)
    assert all(re.fullmatch(r"\d+:[\w.+~-]+", v) for v in summary.packages.values())
    assert 180 <= summary.n_pairs <= 200  # a few skips (no caption, tiny, too large) at most
    assert summary.splits["train"] > summary.splits["val"] > 0 and summary.splits["test"] > 0
    # Classes come from the whole package, so a subset has the full build's benchmark.
    classes = json.loads((tmp_path / "oc/classes.json").read_text())
    assert 10 <= len(classes["classnames"]) <= 20 and "animals" in classes["classnames"]
    assert "unsorted" not in classes["categories"]
    records = all_records(tmp_path / "oc")
    assert len(records) == summary.n_pairs
    for source, r in records.items():
        assert r["split"] == oc.split_of(source)
        assert r["caption"] and len(r["caption"]) <= captions.MAX_CAPTION_CHARS
        assert "_" not in r["caption"] and not re.search(r"\.(svg|png)\b", r["caption"])
        assert -1 <= r["label"] < len(classes["classnames"])
    assert sum(r["label"] >= 0 for r in records.values()) > 0.8 * len(records)
    for r in list(records.values())[:20]:
        with Image.open(tmp_path / "oc" / r["image"]) as im:
            assert im.size == (128, 128) and im.mode == "RGB"
    text = (tmp_path / "oc/LICENSE_AND_PROVENANCE.md").read_text(encoding="utf-8")
    assert "Public Domain" in text and "openclipart-svg" in text
