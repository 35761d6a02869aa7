"""What the commands share: the model options and loading, image inputs and batches, label lists,
the embed/index run options, and printing untrusted text safely. CLI modules import these from here,
never from each other.

torch is imported inside the functions so registering commands costs nothing.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from clipforge.errors import InvalidInputError

if TYPE_CHECKING:
    from clipforge.image import ImageBatch, Preprocess
    from clipforge.sources import SourceItem

PRECISIONS = ("fp32", "fp16", "bf16")


DEFAULT_MODEL_NOTE = " (default: the bundled clipforge-mini model, offline)"


def add_model_arguments(parser: argparse.ArgumentParser, default_note: str = DEFAULT_MODEL_NOTE) -> None:
    """--model / --weights / --arch / --device / --precision. Without --model: `default_note` says what is used."""
    parser.add_argument(
        "--model", metavar="NAME_OR_PATH",
        help="a named architecture (with --weights), a checkpoint file or directory, or a Hugging Face hub id"
        + default_note,
    )
    parser.add_argument("--weights", metavar="TAG", help="weights tag for a named architecture (e.g. openai)")
    parser.add_argument("--arch", help="architecture of a checkpoint file that does not say (e.g. ViT-H-14)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available; LOCAL_RANK under torchrun)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="model dtype (default fp32); fp16/bf16 halve memory on a GPU")


def model_reference(args: argparse.Namespace) -> dict[str, Optional[str]]:
    """What identifies the model: local paths made absolute so a record of it survives a `cd`."""
    name = args.model or "clipforge-mini"  # the bundled default (clipforge.loading.BUNDLED_MODEL_NAME)
    if os.path.exists(os.path.expanduser(name)):
        name = os.path.abspath(os.path.expanduser(name))
    return {"name_or_path": name, "weights": args.weights, "arch": args.arch}


def default_device(requested: Optional[str]) -> str:
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def load_model(args: argparse.Namespace, reference: Optional[dict[str, Optional[str]]] = None) -> tuple[Any, Any, Any]:
    """`clipforge.load` with the command's model options: `(model, preprocess, tokenizer)`."""
    import torch

    import clipforge

    reference = reference or model_reference(args)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    return clipforge.load(reference["name_or_path"], reference["weights"], arch=reference["arch"],
                          device=default_device(args.device), dtype=dtype)


def index_model_reference(args: argparse.Namespace, index: Any) -> dict[str, Any]:
    """How to load the model of a `SearchIndex` (`search`, `serve`): --model if given, else what the index records."""
    stored = index.model
    reference = model_reference(args) if args.model else {
        key: stored.get(key) for key in ("name_or_path", "weights", "arch")
    }
    if not reference["name_or_path"]:
        raise InvalidInputError(f"{args.index} does not record how to load its model; pass --model (and --weights/--arch)")
    return reference


def load_index_model(args: argparse.Namespace, index: Any) -> tuple[Any, Any, Any]:
    """The model of a `SearchIndex` (see `index_model_reference`); a model other than the index's is refused
    (`ModelMismatchError`)."""
    from clipforge.encoding import model_fingerprint
    from clipforge.tasks.search import check_model

    reference = index_model_reference(args, index)
    model, preprocess, tokenizer = load_model(args, reference)
    check_model(index.model, {**reference, **model_fingerprint(model, tokenizer)}, f"index {args.index}")
    return model, preprocess, tokenizer


def storage_dtype(precision: str) -> str:
    # numpy has no bfloat16; normalized bf16 values fit float16 (more mantissa bits, ample range).
    return "float32" if precision == "fp32" else "float16"


# ---- running a command ----------------------------------------------------------------------------


def run_command(command: str, func: Any, args: argparse.Namespace) -> int:
    """Run a command's function; a user-facing error (`ClipforgeError`), an OS error (disk full, no
    permission) or Ctrl-C ends in one error line on stderr (followed by the message's advice lines,
    if it has any) and a non-zero exit, never a traceback.
    CLIPFORGE_DEBUG=1 re-raises, for the traceback. Any other exception is a bug and shows its traceback.
    """
    import warnings

    from clipforge.errors import ClipforgeError

    # Warnings (an assumption clipforge made about a file, say) as one line each, not Python's two.
    warnings.formatwarning = lambda message, category, *_, **__: (
        f"clipforge {command}: warning: {printable(' '.join(str(message).split()))}\n")
    try:
        return func(args)
    except KeyboardInterrupt:
        print(f"clipforge {command}: interrupted", file=sys.stderr)
        return 130
    except (ClipforgeError, OSError) as err:
        if os.environ.get("CLIPFORGE_DEBUG"):
            raise
        # The first line states the error; a message with advice (what was looked for, how to
        # provide it) keeps its further lines, printed as they are written.
        first, *advice = _describe(err).split("\n")
        print(f"clipforge {command}: error: {printable(first)}", file=sys.stderr)
        for line in advice:
            print(printable(line), file=sys.stderr)
        return 1


def _describe(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" writing {err.filename}" if err.filename else ""
        return f"no space left on the device{where}; free some space and run the command again (finished work is kept)"
    return str(err).strip() or type(err).__name__


# ---- images, lists and batches -------------------------------------------------------------------


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files, folders (searched recursively), glob patterns or list files")


def image_inputs(args: argparse.Namespace) -> list["SourceItem"]:
    """The images the IMAGE arguments name, in order, each once (clipforge.sources.read_sources).
    Raises `SourceError` (one line) when there is nothing to do."""
    from clipforge.sources import read_sources

    return [item for item in read_sources(args.images) if item.path is not None]


def add_batch_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=64, help="images (and texts) per batch (default 64)")


def read_list(inline: Optional[str], file: Optional[str], what: str) -> list[str]:
    """Items from a comma-separated string or a file with one per line (blank lines skipped)."""
    if file is not None:
        path = Path(file)
        if not path.is_file():  # a FIFO or a device would block or never end
            raise InvalidInputError(f"{what} file {file!r} is not a regular file")
        items = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    elif inline is not None:
        items = [item.strip() for item in inline.split(",")]
    else:
        raise InvalidInputError(f"no {what} given")
    items = [item for item in items if item]
    if not items:
        raise InvalidInputError(f"the {what} list is empty")
    return items


def image_batches(
    items: list["SourceItem"], preprocess: "Preprocess", batch_size: int, command: str
) -> Iterator[tuple["ImageBatch", Any]]:
    """`(batch, progress_bar)` over the items' images; bad files are reported on stderr as they come
    (batch.errors name them) and skipped.

    A progress bar (stderr, only on a terminal) appears when there is more than one batch of work.
    Small jobs decode in this process: starting DataLoader workers costs more than it saves.
    """
    from tqdm.auto import tqdm

    from clipforge.image import iter_image_batches

    if batch_size < 1:
        raise InvalidInputError(f"--batch-size must be >= 1, got {batch_size}")
    many = len(items) > batch_size
    workers = None if many else 0
    sources = [item.image_source() for item in items]
    with tqdm(total=len(items), unit="image", disable=None if many else True, file=sys.stderr) as bar:
        for batch in iter_image_batches(sources, preprocess, batch_size=batch_size, num_workers=workers):
            for _, name, error in batch.errors:
                tqdm.write(f"clipforge {command}: skipped {printable(name)}: {printable(error.reason)} [{error.code}]",
                           file=sys.stderr)
            yield batch, bar
            bar.update(len(batch.indices) + len(batch.errors))


def error_entry(path: str, error: Any) -> dict[str, Any]:
    return {"path": path, "error": {"code": error.code, "message": error.reason}}


def templates_option(value: str) -> list[str]:
    """The prompt templates a --templates value names: openai, simple, none, or a file of one '{}' template a line."""
    from clipforge.tasks.templates import TEMPLATE_SETS
    from clipforge.tasks.zero_shot import resolve_templates

    if value in TEMPLATE_SETS:
        return list(TEMPLATE_SETS[value])
    if Path(value).is_file():
        return resolve_templates(read_list(None, value, "templates"))
    raise InvalidInputError(f"--templates {value!r} is neither {', '.join(TEMPLATE_SETS)} nor an existing file")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """What `embed` and `index` share: batch size, decoding workers, shard size, progress."""
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--workers", type=int, default=None,
                        help="image decoding processes (default: up to 8, one per CPU; 0: in this process)")
    parser.add_argument("--shard-size", type=int, default=10000, help="items per output shard (default 10000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---- printing untrusted text ---------------------------------------------------------------------

# Unicode categories that must not reach a terminal raw: control characters (escape sequences),
# format characters (right-to-left overrides, zero-width joiners), line/paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def printable(text: str) -> str:
    """`text` safe to print on a terminal: control and bidi-override characters as \\uXXXX, bytes of a
    file name that is not valid UTF-8 (lone surrogates from os.fsdecode) as \\xNN."""
    out = []
    for ch in str(text):
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch != "\t" and unicodedata.category(ch) in _UNPRINTABLE:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def json_text(data: Any) -> str:
    """JSON that is valid UTF-8 and safe on a terminal whatever it holds: non-ASCII text as is, but a
    file name's undecodable bytes (lone surrogates, which json.loads and os.fsencode turn back into
    those bytes) and control or bidi-override characters as \\uXXXX escapes."""
    from clipforge.sources import json_dumps

    text = json_dumps(data)
    return "".join(f"\\u{ord(ch):04x}" if unicodedata.category(ch) in _UNPRINTABLE else ch for ch in text)
