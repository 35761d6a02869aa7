"""Interrogation: ranking = cosine by hand, greedy prompts (monotone, within 77 tokens), the on-disk
table cache (reuse, invalidation, corruption), folder mode and user tables on the command line,
and the shipped WordNet tables with their provenance. Tiny random models, real clip-art images."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clipforge
from clipforge.cli import main as cli_main
from clipforge.configs import ClipConfig, TextConfig, VisionTransformerConfig
from clipforge.encoding import weights_digest
from clipforge.image import load_image
from clipforge.tasks.interrogation import (
    DEFAULT_TABLES,
    Interrogator,
    caption_destinations,
    default_tables,
    provenance,
    table_digest,
)

pytestmark = pytest.mark.filterwarnings("ignore:Palette images with Transparency")

REPO = Path(__file__).resolve().parents[1]
TABLE_DIR = REPO / "src" / "clipforge" / "tasks" / "label_tables"

TINY = ClipConfig(
    embed_dim=32,
    vision=VisionTransformerConfig(image_size=32, patch_size=8, width=64, layers=2, heads=2),
    text=TextConfig(context_length=77, width=64, heads=2, layers=2),
)

# A small real vocabulary (phrases from the shipped tables) keeps the tests fast and readable.
TABLES = {
    "subjects": ["cat", "owl", "lighthouse", "red rose", "sailing ship", "mountain", "bicycle", "teapot"],
    "mediums": ["oil painting", "charcoal drawing", "linocut print", "bronze sculpture", "photograph", "watercolor painting"],
    "styles": ["crimson", "vibrant", "gloomy", "intricate", "pastel", "sunlit", "dramatic"],
}


def _tiny(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return clipforge.save(clipforge.ClipModel(TINY), path)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("models")
    return _tiny(d / "tiny.safetensors", 0), _tiny(d / "tiny-other.safetensors", 1)


@pytest.fixture(scope="module")
def loaded(model_files):
    return clipforge.load(model_files[0])


@pytest.fixture(scope="module")
def images() -> list[Path]:
    from image_fixtures import corpus_sample

    return list(corpus_sample(4))


class CountingModel(torch.nn.Module):
    """The model's public API, counting how many texts go through encode_text."""

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.base = base
        self.config = base.config
        self.texts_encoded = 0

    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.base.encode_image(pixels, normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        self.texts_encoded += tokens.shape[0]
        return self.base.encode_text(tokens, normalize=normalize)


# ---- the shipped tables ----------------------------------------------------------------------------


def test_default_tables_load_are_nonempty_and_have_provenance():
    tables = default_tables()
    assert list(tables) == list(DEFAULT_TABLES) == ["mediums", "movements", "subjects", "styles"]
    for name, phrases in tables.items():
        assert 20 <= len(phrases) <= 5000, (name, len(phrases))  # "tens to a few thousand"
        assert len(set(phrases)) == len(phrases) and all(p == p.strip() and p for p in phrases)
    assert "oil painting" in tables["mediums"] and "Impressionism" in tables["movements"]
    assert "owl" in tables["subjects"] and "crimson" in tables["styles"]

    text = provenance()
    for needle in ("WordNet 3.0 Copyright 2006 by Princeton University", "wordnet-base", "wamerican-small",
                   "python tools/build_label_tables.py", "Kevin Atkinson"):
        assert needle in text, needle
    # The checksums recorded in PROVENANCE.md are those of the shipped files: the record describes this build.
    for name in DEFAULT_TABLES:
        digest = hashlib.sha256((TABLE_DIR / f"{name}.txt").read_bytes()).hexdigest()
        assert f"{digest}  {name}.txt" in text, name
        assert f"| `{name}.txt` | {len(tables[name])} |" in text, name
    assert (REPO / "tools" / "build_label_tables.py").is_file()


def test_build_script_reproduces_the_tables(tmp_path):
    if not Path("/usr/share/wordnet/data.noun").exists() or not Path("/usr/share/dict/american-english-small").exists():
        # `make test` installs them; a skipped test would never run in CI.
        pytest.fail("wordnet-base / wamerican-small are not installed (make test installs them; or apt-get install "
                    "wordnet-base wamerican-small)")
    import subprocess

    subprocess.run([sys.executable, str(REPO / "tools" / "build_label_tables.py"), "--out-dir", str(tmp_path)],
                   check=True, capture_output=True)
    for name in DEFAULT_TABLES:
        assert (tmp_path / f"{name}.txt").read_bytes() == (TABLE_DIR / f"{name}.txt").read_bytes(), name


# ---- ranking and prompts -----------------------------------------------------------------------------


def test_rank_equals_sorting_by_hand_computed_cosine(loaded, images, tmp_path):
    model, preprocess, tokenizer = loaded
    interrogator = Interrogator(model, preprocess, tokenizer, TABLES, cache_dir=tmp_path)
    for path in images[:2]:
        with torch.no_grad():
            image = model.encode_image(preprocess(load_image(path)).unsqueeze(0))
            for name, phrases in TABLES.items():
                text = model.encode_text(tokenizer(phrases))
                cosine = (F.normalize(text, dim=-1) @ F.normalize(image, dim=-1)[0]).tolist()
                expected = sorted(zip(phrases, cosine), key=lambda pc: -pc[1])
                ranked = interrogator.rank(path, name, top_k=len(phrases))
                assert [p for p, _ in ranked] == [p for p, _ in expected]
                assert [s for _, s in ranked] == pytest.approx([s for _, s in expected], abs=1e-5)
                from_pil = interrogator.rank(Image.open(path), name, top_k=3)  # a PIL image ranks the same
                assert [p for p, _ in from_pil] == [p for p, _ in ranked[:3]]


def test_greedy_prompt_never_decreases_and_is_reproducible_by_hand(loaded, images, tmp_path):
    model, preprocess, tokenizer = loaded
    interrogator = Interrogator(model, preprocess, tokenizer, TABLES, cache_dir=tmp_path, candidates_per_table=8)

    def cosine(v: torch.Tensor, text: str) -> float:
        with torch.no_grad():
            return float(model.encode_text(tokenizer([text]), normalize=True)[0] @ v)

    lengths = []
    for path in images:
        result = interrogator.interrogate(path, top_k=3)
        lengths.append(len(result.phrases))
        v = interrogator.image_features(path)
        assert result.phrases[0] == interrogator.rank(path, "subjects", 1)[0][0]  # starts from the best subject
        assert result.prompt == ", ".join(result.phrases) and len(set(result.phrases)) == len(result.phrases)
        assert len(result.steps) == len(result.phrases)
        assert all(b > a for a, b in zip(result.steps, result.steps[1:]))  # every added phrase raised similarity
        for i, step in enumerate(result.steps):  # each step's score is the similarity of that prompt prefix
            assert step == pytest.approx(cosine(v, ", ".join(result.phrases[: i + 1])), abs=1e-5)
        assert result.similarity == result.steps[-1]
        # It stopped because no remaining phrase raises similarity further.
        pool = [p for t in TABLES for p in TABLES[t] if p not in result.phrases]
        assert all(cosine(v, result.prompt + ", " + p) <= result.similarity + 1e-6 for p in pool)
        assert len(tokenizer.encode(result.prompt)) <= 75
        assert {name: len(top) for name, top in result.top.items()} == {name: 3 for name in TABLES}
    assert max(lengths) >= 2, lengths  # the checks above saw real multi-step searches (LengthLovingModel: long ones)

    capped = interrogator.interrogate(images[0], max_phrases=1)
    assert len(capped.phrases) == 1 and capped.steps == [capped.similarity]
    captioned = interrogator.interrogate(images[0], caption="a drawing of something")
    assert captioned.phrases[0] == "a drawing of something"


class LengthLovingModel(CountingModel):
    """Text embeddings lean toward a fixed direction with every token: every added phrase helps,
    so the greedy search can only be stopped by the token limit."""

    def __init__(self, base: torch.nn.Module, direction: torch.Tensor) -> None:
        super().__init__(base)
        self.register_buffer("direction", direction)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        base = F.normalize(super().encode_text(tokens), dim=-1)
        n_tokens = (tokens != 0).sum(dim=-1, keepdim=True).float()
        x = base + n_tokens * self.direction
        return F.normalize(x, dim=-1) if normalize else x


def test_greedy_prompt_respects_the_token_limit(loaded, images, tmp_path):
    base, preprocess, tokenizer = loaded
    with torch.no_grad():
        v = base.encode_image(preprocess(load_image(images[0])).unsqueeze(0), normalize=True)[0]
    model = LengthLovingModel(base, v)
    # Phrases of various lengths (2 to 12 tokens), enough of them to overflow 75 tokens many times over.
    words = ["red", "blue", "ancient", "stormy", "harbor", "lantern", "meadow", "velvet", "granite", "copper", "silent", "golden"]
    phrases = [" ".join(words[i % 12 : i % 12 + 1 + (i % 7)] + words[: i % 5]) for i in range(40)]
    interrogator = Interrogator(model, preprocess, tokenizer, {"subjects": phrases[:5], "details": phrases[5:]},
                                cache_dir=tmp_path, candidates_per_table=40)
    result = interrogator.interrogate(images[0])
    n_tokens = len(tokenizer.encode(result.prompt))
    assert n_tokens <= 77 - 2 and len(result.phrases) > 3
    assert all(b > a for a, b in zip(result.steps, result.steps[1:]))
    # It stopped at the limit: every unused phrase would have pushed the prompt past 75 tokens.
    unused = [p for p in dict.fromkeys(phrases) if p not in result.phrases]
    assert unused and all(len(tokenizer.encode(result.prompt + ", " + p)) > 75 for p in unused)
    # The tokenizer's own row agrees: end-of-text lands within the context, nothing was truncated.
    row = tokenizer([result.prompt])[0]
    assert int((row == tokenizer.eot_token_id).nonzero()[0]) == n_tokens + 1 <= 76


# ---- the table cache -----------------------------------------------------------------------------------


def test_cache_is_reused_invalidated_and_rebuilt(model_files, images, tmp_path):
    model, preprocess, tokenizer = clipforge.load(model_files[0])
    counting = CountingModel(model)
    first = Interrogator(counting, preprocess, tokenizer, TABLES, cache_dir=tmp_path)
    ranked = first.rank(images[0], "mediums", 4)
    assert counting.texts_encoded == len(TABLES["mediums"])
    path = first.cache_path("mediums")
    assert path.exists() and path.suffix == ".safetensors"

    # A new interrogator (a new process, in effect) reads the file: no text is encoded.
    counting.texts_encoded = 0
    second = Interrogator(counting, preprocess, tokenizer, TABLES, cache_dir=tmp_path)
    again = second.rank(images[0], "mediums", 4)
    assert [p for p, _ in again] == [p for p, _ in ranked]
    assert [s for _, s in again] == pytest.approx([s for _, s in ranked], abs=1e-6)
    assert counting.texts_encoded == 0
    torch.testing.assert_close(second.table_embeddings("mediums"), first.table_embeddings("mediums"))

    # A changed table is a new entry (and the old one stays valid).
    changed = {**TABLES, "mediums": TABLES["mediums"] + ["mosaic"]}
    third = Interrogator(counting, preprocess, tokenizer, changed, cache_dir=tmp_path)
    third.table_embeddings("mediums")
    assert counting.texts_encoded == len(TABLES["mediums"]) + 1
    assert third.cache_path("mediums") != path and path.exists()
    assert table_digest(changed["mediums"]) != table_digest(TABLES["mediums"])

    # Another model with the same config is a new entry too.
    other, _, _ = clipforge.load(model_files[1])
    assert weights_digest(other) != weights_digest(model)
    assert weights_digest(clipforge.load(model_files[0])[0]) == weights_digest(model)  # stable across loads
    other_counting = CountingModel(other)
    fourth = Interrogator(other_counting, preprocess, tokenizer, TABLES, cache_dir=tmp_path)
    fourth.table_embeddings("mediums")
    assert other_counting.texts_encoded == len(TABLES["mediums"]) and fourth.cache_path("mediums") != path


@pytest.mark.parametrize("damage", ["truncate", "flip_data_byte", "garbage", "empty", "wrong_phrases"])
def test_corrupt_cache_file_is_rebuilt(loaded, tmp_path, damage):
    model, preprocess, tokenizer = loaded
    counting = CountingModel(model)
    good = Interrogator(counting, preprocess, tokenizer, TABLES, cache_dir=tmp_path).table_embeddings("styles").clone()
    path = Interrogator(counting, preprocess, tokenizer, TABLES, cache_dir=tmp_path).cache_path("styles")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_data_byte":  # still a valid safetensors file, only a number changed
        path.write_bytes(data[:-7] + bytes([data[-7] ^ 0x40]) + data[-6:])
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a well-formed file whose phrase list is not this table's (e.g. edited by hand)
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        meta["phrases"] = json.dumps(list(reversed(TABLES["styles"])))
        save_file(load_file(str(path)), str(path), metadata=meta)

    counting.texts_encoded = 0
    fresh = Interrogator(counting, preprocess, tokenizer, TABLES, cache_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        rebuilt = fresh.table_embeddings("styles")
    assert counting.texts_encoded == len(TABLES["styles"])  # recomputed, not read
    torch.testing.assert_close(rebuilt, good)
    # The rebuilt file is whole again: the next reader uses it silently.
    counting.texts_encoded = 0
    Interrogator(counting, preprocess, tokenizer, TABLES, cache_dir=tmp_path).table_embeddings("styles")
    assert counting.texts_encoded == 0


# ---- folders and the command line ---------------------------------------------------------------------


def _cli(args, monkeypatch, capsys) -> tuple[int, str, str]:
    if "interrogate" not in cli_main.COMMAND_MODULES:  # until cli/main.py lists the command
        monkeypatch.setattr(cli_main, "COMMAND_MODULES", [*cli_main.COMMAND_MODULES, "interrogate"])
    code = cli_main.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def folder(images, tmp_path) -> Path:
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    shutil.copy(images[0], d / "a.png")
    shutil.copy(images[1], d / "sub" / "b.png")
    shutil.copy(images[2], d / "c.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (d / "notes.md").write_text("not an image")
    return d


def test_folder_mode_writes_one_txt_per_good_image_and_reports_bad_ones(model_files, folder, tmp_path, monkeypatch, capsys):
    tables = tmp_path / "things.txt"
    tables.write_text("\n".join(TABLES["subjects"]) + "\n")
    base = ["interrogate", folder, "--model", model_files[0], "--tables", "mediums,styles", "--table", f"subjects={tables}",
            "--cache-dir", tmp_path / "cache", "--no-progress", "--max-phrases", "4"]
    code, out, err = _cli(base, monkeypatch, capsys)
    assert code == 0
    good = [folder / "a.png", folder / "sub" / "b.png", folder / "c.png"]
    for image in good:
        txt = image.with_suffix(".txt")
        prompt = txt.read_text().strip()
        assert prompt and prompt.split(", ")[0] in TABLES["subjects"] and len(prompt.split(", ")) <= 4
        assert f"{image}\t{prompt}" in out
    assert not (folder / "broken.txt").exists()
    assert "broken.png" in err and "skipped" in err and "1 unreadable" in err
    assert sorted(p.name for p in folder.rglob("*.txt")) == ["a.txt", "b.txt", "c.txt"]

    # Again: existing captions are kept; with --out-dir the layout is mirrored there instead.
    (folder / "a.txt").write_text("my own caption\n")
    code, out, err = _cli(base, monkeypatch, capsys)
    assert code == 0 and (folder / "a.txt").read_text() == "my own caption\n" and "3 already captioned" in err
    out_dir = tmp_path / "captions"
    code, out, err = _cli([*base, "--out-dir", out_dir, "--json"], monkeypatch, capsys)
    doc = json.loads(out)
    assert code == 0 and doc["n_interrogated"] == 3 and doc["n_errors"] == 1
    assert sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*.txt")) == ["a.txt", "c.txt", "sub/b.txt"]
    errors = [r for r in doc["results"] if "error" in r]
    assert [Path(r["path"]).name for r in errors] == ["broken.png"] and errors[0]["error"]["code"]


def test_user_table_on_the_command_line(model_files, images, tmp_path, monkeypatch, capsys):
    animals = tmp_path / "animals.txt"
    animals.write_text("# animals, one per line\ncat\nowl\n\nzebra\nowl\nbadger\n")
    colours = tmp_path / "colours.txt"
    colours.write_text("crimson\nteal\nochre\n")
    code, out, err = _cli(["interrogate", images[0], "--model", model_files[0], "--tables", "none",
                           "--table", f"animals={animals}", "--table", f"colours={colours}", "--subject-tables", "animals",
                           "--cache-dir", tmp_path / "cache", "--json", "--top-k", "10"], monkeypatch, capsys)
    assert code == 0, err
    result = json.loads(out)["results"][0]
    assert set(result["top"]) == {"animals", "colours"}
    # The comment line, the blank line and the duplicate "owl" are dropped.
    assert sorted(p["phrase"] for p in result["top"]["animals"]) == ["badger", "cat", "owl", "zebra"]
    assert result["phrases"][0] in {"badger", "cat", "owl", "zebra"}
    assert set(result["phrases"][1:]) <= {"crimson", "teal", "ochre", "badger", "cat", "owl", "zebra"}
    assert not images[0].with_suffix(".txt").exists()  # a single file is printed, not captioned in place

    code, out, _ = _cli(["interrogate", images[0], "--model", model_files[0], "--tables", "none",
                         "--table", f"animals={animals}", "--cache-dir", tmp_path / "cache"], monkeypatch, capsys)
    assert code == 0 and out.strip().split(", ")[0] in {"badger", "cat", "owl", "zebra"}

    code, _, err = _cli(["interrogate", images[0], "--model", model_files[0], "--table", "oops"], monkeypatch, capsys)
    assert code == 1 and "NAME=FILE" in err
    code, _, err = _cli(["interrogate", images[0], "--model", model_files[0], "--tables", "colours"], monkeypatch, capsys)
    assert code == 1 and "unknown table" in err


def test_caption_files_of_same_named_images_do_not_collide(tmp_path):
    for name in ("cat.jpg", "cat.png", "dog.png"):
        (tmp_path / name).write_bytes(b"")
    pairs = dict(caption_destinations([tmp_path]))
    assert Path(pairs[str(tmp_path / "cat.jpg")]).name == "cat.jpg.txt"
    assert Path(pairs[str(tmp_path / "cat.png")]).name == "cat.png.txt"
    assert Path(pairs[str(tmp_path / "dog.png")]).name == "dog.txt"
