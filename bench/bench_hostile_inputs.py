"""What hostile or damaged images, tables and paths cost clipforge (docs/security.md, "Images" and
"Tables"): each case is generated here, then read in a child forked from a process that has
already imported clipforge, timing it and measuring peak RSS growth (VmHWM at the end minus VmRSS
at the start).

    OMP_NUM_THREADS=1 python bench/bench_hostile_inputs.py
"""

from __future__ import annotations

import io
import os
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

from PIL import Image

from clipforge.configs import PreprocessConfig
from clipforge.image import Preprocess, iter_image_batches
from clipforge.sources import read_table


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height RGB pixels, with a few rows of real data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" + b"\0" * 3 * min(width, 64), 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _image_bytes(size: tuple[int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, fmt)
    return buffer.getvalue()


def image_cases(d: Path) -> dict[str, tuple[str, Path]]:
    cases: dict[str, tuple[str, Path]] = {}

    def put(name: str, what: str, data: bytes, filename: str) -> None:
        path = d / filename
        path.write_bytes(data)
        cases[name] = (what, path)

    put("thin_strip", "a 1x4000 PNG (~100 bytes; 224x896,000 pixels once resized)", _image_bytes((4000, 1), "PNG"), "strip.png")
    put("tall_strip", "a 4000x1 ... 1x20000 PNG", _image_bytes((1, 20000), "PNG"), "tall.png")
    put("pixel_bomb", "a 200-byte PNG declaring 100,000 x 100,000 pixels", _png_declaring(100_000, 100_000), "bomb.png")
    put("under_the_ceiling", "a PNG declaring 9,000 x 9,000 pixels (81 M, under the limit), rows missing",
        _png_declaring(9_000, 9_000), "big.png")
    put("eps_as_jpg", "an EPS (PostScript) file named .jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "eps.jpg")
    put("truncated_png", "a 256x256 PNG cut in half", _image_bytes((256, 256), "PNG")[:400], "cut.png")
    put("truncated_jpeg", "a 256x256 JPEG cut in half", (lambda b: b[: len(b) // 2])(_image_bytes((256, 256), "JPEG")), "cut.jpg")
    put("text_as_png", "a text file named .png", b"hello, not an image\n" * 10, "text.png")
    put("empty", "a 0-byte .png", b"", "empty.png")
    loop = d / "loop.png"
    os.symlink(loop, loop)
    cases["symlink_loop"] = ("a symbolic link to itself", loop)
    fifo = d / "pipe.png"
    os.mkfifo(fifo)
    cases["fifo"] = ("a named pipe called .png (opening it would block)", fifo)
    odd = Path(os.fsdecode(os.path.join(os.fsencode(d), b"caf\xe9.png")))
    odd.write_bytes(_image_bytes((32, 32), "PNG"))
    cases["non_utf8_name"] = ("a PNG whose name is not valid UTF-8 (caf\\xe9.png)", odd)
    return cases


def table_cases(d: Path) -> dict[str, tuple[str, Path]]:
    cases: dict[str, tuple[str, Path]] = {}
    rows = [f"img/{i}.png,caption {i}" for i in range(10_000)]

    def put(name: str, what: str, data: bytes, filename: str) -> None:
        path = d / filename
        path.write_bytes(data)
        cases[name] = (what, path)

    body = ("image,caption\n" + "\n".join(rows) + "\n").encode()
    put("clean_10k", "a clean 10,000-row CSV (for comparison)", body, "clean.csv")
    put("unclosed_quote", "10,000 rows, a quote opened in row 3 and never closed", body.replace(b"caption 3\n", b'"caption 3\n', 1), "quote.csv")
    put("bad_utf8", "10,000 rows, one invalid UTF-8 byte in row 7", body.replace(b"caption 7\n", b"caption \xff7\n", 1), "bytes.csv")
    put("nul_in_path", "10,000 rows, a NUL byte in a path", body.replace(b"img/9.png", b"img/\x009.png", 1), "nul.csv")
    put("huge_cell", "a 64 MB caption cell in one row", b"image,caption\na.png," + b"x" * (64 << 20) + b"\nb.png,ok\n", "cell.csv")
    put("jsonl_garbage", "10,000 JSONL lines, every tenth not JSON",
        b"".join((b'{"image": "a.png", "caption": "c"}\n' if i % 10 else b"{not json\n") for i in range(10_000)), "rows.jsonl")
    put("jsonl_deep", "a JSONL line nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000 + b"\n", "deep.jsonl")
    return cases


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(work: Callable[[], str]) -> tuple[str, float, float]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        start_rss, start = _rss_kib("VmRSS"), time.perf_counter()
        try:
            outcome = work()
        except BaseException as exc:  # noqa: BLE001 - what escaped is the finding
            outcome = f"RAISED {type(exc).__name__}: {str(exc)[:80]}"
        seconds = time.perf_counter() - start
        os.write(write_end, f"{seconds}\t{(_rss_kib('VmHWM') - start_rss) / 1024}\t{outcome}".encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        seconds, mib, outcome = f.read().decode().split("\t", 2)
    os.waitpid(pid, 0)
    return outcome, float(seconds), float(mib)


def _image_outcome(path: Path) -> str:
    batch = next(iter_image_batches([str(path)], Preprocess(PreprocessConfig()), num_workers=0))
    if batch.errors:
        return f"skipped [{batch.errors[0][2].code}]"
    return f"embedded, pixels {tuple(batch.pixels.shape)}"


def _table_outcome(path: Path) -> str:
    items = read_table(path)
    bad = [i for i in items if i.problem]
    return f"{len(items) - len(bad)} rows kept, {len(bad)} named and skipped" + (f" ({bad[0].problem[:60]}...)" if bad else "")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        print("| case | input | outcome | time | peak RSS growth |\n|---|---|---|---:|---:|")
        for kind, cases, outcome in (("image", image_cases(d), _image_outcome), ("table", table_cases(d), _table_outcome)):
            for name, (what, path) in cases.items():
                result, seconds, mib = measure(lambda p=path, f=outcome: f(p))
                print(f"| `{name}` | {what} | {result} | {seconds:.3f} s | {mib:.1f} MiB |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
