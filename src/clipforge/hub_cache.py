"""Find, download and verify weight files. Offline first: the network is the last resort.

Resolution order of `resolve_weights_file(record)` (the loader handles in-memory state dicts and
explicit local paths before it gets here):

1. the clipforge cache: `cache_dir`, else $CLIPFORGE_CACHE, else $XDG_CACHE_HOME/clipforge
   (~/.cache/clipforge). It holds `<url file name>` (OpenAI's .pt, sha256-verified) and
   `<org>--<name>/<hub file name>` (a hub file placed by hand). OpenAI's and open_clip's own
   download folder ~/.cache/clip is also read for URL files (sha256-verified, never written).
2. the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), read
   with `local_files_only=True`, so no request is made.
3. unless offline: download from the hub (huggingface_hub, into the HF cache) and, if the record
   has no hub repo or the hub fails, from the URL with `verified_download` (into the clipforge cache).

Offline (no step 3) when `offline=True`, or by default when HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE or
CLIPFORGE_OFFLINE is set to 1. If nothing is found, ONE `WeightsNotFoundError` says what was looked
for, every place looked and how to provide the file; errors from inside huggingface_hub or urllib
are kept as `__cause__` but never needed to understand the message.

huggingface_hub and tqdm are imported inside functions: importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import tempfile
import urllib.request
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from clipforge import __version__
from clipforge.errors import ClipforgeError

if TYPE_CHECKING:
    from clipforge.model_zoo import WeightsRecord

__all__ = [
    "WeightsNotFoundError",
    "ChecksumMismatchError",
    "DownloadError",
    "default_cache_dir",
    "hf_hub_cache_dir",
    "is_offline",
    "sha256_of",
    "verified_download",
    "resolve_weights_file",
    "resolve_hf_repo_dir",
    "hf_repo_weight_files",
]

PathLike = Union[str, "os.PathLike[str]"]

_TRUE = {"1", "ON", "YES", "TRUE"}
_OFFLINE_VARS = ("CLIPFORGE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_CHUNK = 1 << 20
# transformers-format repos: the config plus weights, single-file or sharded, safetensors preferred.
_HF_WEIGHTS = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)


class WeightsNotFoundError(ClipforgeError, FileNotFoundError):
    """No weights file could be found or fetched. The message says where we looked and what to do."""

    def __str__(self) -> str:
        # FileNotFoundError(msg) prints msg; keep it that way even if someone passes errno-style args.
        return str(self.args[0]) if self.args else ""


class ChecksumMismatchError(ClipforgeError, ValueError):
    """A downloaded file's sha256 differs from the published one (the file was deleted)."""


class DownloadError(ClipforgeError, OSError):
    """A download stopped before the announced size was received (the partial file was deleted)."""


# ---- environment -----------------------------------------------------------------------------------


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in _TRUE


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE or CLIPFORGE_OFFLINE is set to 1 (read at call time)."""
    return any(_env_true(v) for v in _OFFLINE_VARS)


def _offline_reason(offline_arg: Optional[bool], unreachable: Optional[str] = None) -> str:
    if unreachable:
        return f"no network: {unreachable}"
    if offline_arg:
        return "offline=True was passed"
    names = [f"{v}=1" for v in _OFFLINE_VARS if _env_true(v)]
    return " and ".join(names) + " is set"


# Without a network, huggingface_hub and urllib retry and wait for half a minute before failing.
# One short probe per host and process answers "can we talk to it?" in at most NETWORK_PROBE_SECONDS:
# a HEAD request, run in a thread so that a hanging resolver is bounded too. Any HTTP answer (even an
# error status) means reachable; a refused or hanging connection, or a TLS certificate that is not
# the host's (an intercepting sandbox), means not.
NETWORK_PROBE_SECONDS = 2.0
_PROBED: dict[str, Optional[str]] = {}


def unreachable_reason(url: str) -> Optional[str]:
    """None when `url`'s server answers an HTTP request within NETWORK_PROBE_SECONDS, else why not.

    Remembered per scheme://host:port for the life of the process. CLIPFORGE_SKIP_NETWORK_PROBE=1
    skips the probe."""
    import threading
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    if _env_true("CLIPFORGE_SKIP_NETWORK_PROBE"):
        return None
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    if origin in _PROBED:
        return _PROBED[origin]
    result: list[Optional[str]] = [f"{parts.netloc} did not answer within {NETWORK_PROBE_SECONDS:g} s"]

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(origin + "/", method="HEAD"), timeout=NETWORK_PROBE_SECONDS).close()
            result[0] = None
        except urllib.error.HTTPError:
            result[0] = None  # the server answered
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            result[0] = f"cannot reach {parts.netloc} ({getattr(reason, 'strerror', None) or reason})"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(NETWORK_PROBE_SECONDS + 0.5)
    _PROBED[origin] = result[0]
    return result[0]


def _hub_url() -> str:
    return _hf_endpoint() or "https://huggingface.co"


def _xdg_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()


def default_cache_dir() -> Path:
    """$CLIPFORGE_CACHE, else $XDG_CACHE_HOME/clipforge, else ~/.cache/clipforge (read at call time)."""
    env = os.environ.get("CLIPFORGE_CACHE")
    return Path(env).expanduser() if env else _xdg_cache() / "clipforge"


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache as huggingface_hub computes it, but from the environment *now*.

    huggingface_hub reads HF_HOME/HF_HUB_CACHE once at import; reading them per call means a
    variable set later in the process (or in a test) is still honoured.
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    hf_home = os.environ.get("HF_HOME")
    home = Path(os.path.expandvars(hf_home)).expanduser() if hf_home else _xdg_cache() / "huggingface"
    return home / "hub"


def _openai_download_dir() -> Path:
    # Where clip.load() and open_clip put OpenAI's .pt files; reusing them saves a 1 GB download.
    return Path.home() / ".cache" / "clip"


def _hf_endpoint() -> Optional[str]:
    return os.environ.get("HF_ENDPOINT") or None


def _repo_folder(hub_id: str) -> str:
    return "models--" + hub_id.replace("/", "--")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    first = first if len(first) <= 200 else first[:197] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# ---- hashing and downloading -----------------------------------------------------------------------


def sha256_of(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verified_download(
    url: str,
    dest: PathLike,
    sha256: Optional[str],
    *,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest`, hashing while streaming; `dest` appears only if complete and verified.

    The bytes go to a temporary file next to `dest` (same file system, so `os.replace` is atomic);
    a short read, a network error or a sha256 mismatch deletes the temporary file and raises
    (`DownloadError` / the OSError / `ChecksumMismatchError`). An existing `dest` is replaced only on success.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        received = 0
        request = urllib.request.Request(url, headers={"User-Agent": f"clipforge/{__version__}"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                try:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except http.client.HTTPException as exc:  # IncompleteRead is not an OSError
                    raise DownloadError(f"download of {url} broke off after {received} bytes: {_short(exc)}") from exc
            # http.client returns b"" when a Content-Length response is cut short; check the size ourselves.
            if total is not None and received != total:
                raise DownloadError(f"download of {url} broke off after {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if sha256 is not None and got != sha256.lower():
            raise ChecksumMismatchError(
                f"sha256 mismatch for {url}: expected {sha256.lower()}, got {got}; the download was discarded"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


# ---- the clipforge cache ---------------------------------------------------------------------------


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_matches(path: Path, sha256: str) -> bool:
    # A "<file>.verified" stamp (sha256, size, mtime) spares re-hashing a 1 GB file on every load.
    stamp = _stamp_path(path)
    if not stamp.is_file():
        return False
    st = path.stat()
    return stamp.read_text().split() == [sha256, str(st.st_size), str(st.st_mtime_ns)]


def _write_stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    try:
        _stamp_path(path).write_text(f"{sha256} {st.st_size} {st.st_mtime_ns}\n")
    except OSError:
        # Read-only folder: the stamp is only an optimisation, the file has been verified anyway.
        return


def _verified_local(path: Path, sha256: Optional[str]) -> bool:
    if sha256 is None:
        return True
    sha256 = sha256.lower()
    if _stamp_matches(path, sha256):
        return True
    got = sha256_of(path)
    if got != sha256:
        warnings.warn(f"ignoring {path}: sha256 is {got}, expected {sha256} (corrupt or different file)", stacklevel=3)
        return False
    _write_stamp(path, sha256)
    return True


def _local_candidates(
    record: "WeightsRecord", cache: Path, *, include_openai_dir: bool
) -> list[tuple[Path, Optional[str]]]:
    """(path, expected sha256) pairs in the clipforge cache, best first."""
    out: list[tuple[Path, Optional[str]]] = []
    if record.url_filename:
        out.append((cache / record.url_filename, record.sha256))
        if include_openai_dir:
            out.append((_openai_download_dir() / record.url_filename, record.sha256))
    if record.hf_hub_id:
        folder = cache / record.hf_hub_id.replace("/", "--")
        out.extend((folder / name, None) for name in record.hf_filenames)
    return out


# ---- huggingface_hub -------------------------------------------------------------------------------


def _is_hub_failure(exc: BaseException) -> bool:
    """The errors huggingface_hub raises for "not there / not reachable", as opposed to our own bugs."""
    from huggingface_hub import errors

    kinds: list[type] = [OSError, ValueError, errors.EntryNotFoundError]
    if hasattr(errors, "XetDownloadError"):
        kinds.append(errors.XetDownloadError)
    httpx = sys.modules.get("httpx")  # huggingface_hub >= 1.0 talks through httpx
    if httpx is not None:
        kinds.append(httpx.HTTPError)
    return isinstance(exc, tuple(kinds))


def _is_missing_remote_file(exc: BaseException) -> bool:
    """The hub answered, and the file is not in the repo (HTTP 404 EntryNotFound)."""
    from huggingface_hub import errors

    if hasattr(errors, "RemoteEntryNotFoundError"):  # huggingface_hub >= 1.0
        return isinstance(exc, errors.RemoteEntryNotFoundError)
    return isinstance(exc, errors.EntryNotFoundError) and not isinstance(exc, errors.LocalEntryNotFoundError)


def _hf_file(hub_id: str, filename: str, *, local_only: bool) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(
            hub_id,
            filename,
            cache_dir=hf_hub_cache_dir(),
            local_files_only=local_only,
            endpoint=_hf_endpoint(),
            library_name="clipforge",
            library_version=__version__,
        )
    )


# ---- resolution ------------------------------------------------------------------------------------


def resolve_weights_file(
    record: "WeightsRecord",
    *,
    cache_dir: Optional[PathLike] = None,
    offline: Optional[bool] = None,
) -> Path:
    """The local path of `record`'s weights file, downloading it only if allowed and needed.

    See the module docstring for the order. Raises `WeightsNotFoundError` when nothing is found,
    `ChecksumMismatchError` when a downloaded file does not match the published sha256.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    is_off = is_offline() if offline is None else offline
    looked: list[str] = []
    failures: list[str] = []
    last_error: Optional[BaseException] = None  # kept as __cause__ for debugging; the message stands alone

    # (1) clipforge cache (+ OpenAI's folder when the user has not pinned a cache of their own).
    for path, sha in _local_candidates(record, cache, include_openai_dir=cache_dir is None):
        looked.append(str(path))
        if path.is_file() and _verified_local(path, sha):
            return path

    # (2) Hugging Face cache, no network.
    hf_cache = hf_hub_cache_dir()
    if record.hf_hub_id:
        for name in record.hf_filenames:
            looked.append(f"{hf_cache / _repo_folder(record.hf_hub_id)}/snapshots/*/{name} (Hugging Face cache)")
            try:
                return _hf_file(record.hf_hub_id, name, local_only=True)
            except Exception as exc:
                if not _is_hub_failure(exc):
                    raise

    # (3) network, after a quick check that there is one.
    unreachable = None
    if not is_off:
        unreachable = unreachable_reason(_hub_url() if record.hf_hub_id else str(record.url))
        is_off = unreachable is not None
    if not is_off:
        if record.hf_hub_id:
            for name in record.hf_filenames:
                try:
                    return _hf_file(record.hf_hub_id, name, local_only=False)
                except Exception as exc:
                    if not _is_hub_failure(exc):
                        raise
                    failures.append(f"hub {record.hf_hub_id}/{name}: {_short(exc)}")
                    last_error = exc
                    if not _is_missing_remote_file(exc):
                        break  # the hub is unreachable or refuses us: the next file name will not fare better
        if record.url:
            dest = cache / str(record.url_filename)
            try:
                path = verified_download(record.url, dest, record.sha256)
            except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, DownloadError
                failures.append(f"{record.url}: {_short(exc)}")
                last_error = exc
            else:
                if record.sha256:
                    _write_stamp(path, record.sha256.lower())
                return path

    raise WeightsNotFoundError(_weights_message(record, cache, looked, failures, is_off, offline, unreachable)) from last_error


def _weights_message(
    record: "WeightsRecord",
    cache: Path,
    looked: list[str],
    failures: list[str],
    is_off: bool,
    offline_arg: Optional[bool],
    unreachable: Optional[str] = None,
) -> str:
    files = " or ".join(record.hf_filenames)
    wanted = []
    if record.hf_hub_id:
        wanted.append(f"{files} from Hugging Face repo {record.hf_hub_id}")
    if record.url:
        wanted.append(f"{record.url_filename} from {record.url} (sha256 {record.sha256})")
    lines = [f"No weights file found for {record.arch} with tag {record.tag!r}: looked for {' or '.join(wanted)}."]
    if is_off:
        lines.append(f"Offline ({_offline_reason(offline_arg, unreachable)}), so nothing was downloaded.")
    elif failures:
        lines.append("Downloading failed:")
        lines += [f"  - {f}" for f in failures]
    lines.append("Looked in:")
    lines += [f"  - {p}" for p in looked]
    lines.append("To provide it, do one of:")
    if record.hf_hub_id:
        first = record.hf_filenames[0]
        lines.append(
            f"  - on a machine with internet access run `hf download {record.hf_hub_id} {first}`, copy its "
            f"Hugging Face cache folder here and set HF_HOME (or HF_HUB_CACHE) to it;"
        )
        lines.append(f"  - or put the file at {cache / record.hf_hub_id.replace('/', '--') / first};")
    if record.url:
        lines.append(f"  - or download `curl -L -o {cache / str(record.url_filename)} {record.url}`;")
    first_option = lines.index("To provide it, do one of:") + 1
    lines[first_option] = lines[first_option].replace("  - or ", "  - ", 1)
    lines.append(
        f"  - or use the file directly: `--model /path/to/file --arch {record.arch}` on the command line, "
        f"clipforge.load(\"/path/to/file\", arch={record.arch!r}) in Python. "
        "Set CLIPFORGE_CACHE to use another cache folder."
    )
    if is_off and not unreachable:
        lines.append("  - or allow downloads: unset HF_HUB_OFFLINE / CLIPFORGE_OFFLINE (or pass offline=False).")
    return "\n".join(lines)


def hf_repo_weight_files(repo_dir: PathLike) -> list[Path]:
    """The weight files of a transformers-format folder: single or sharded, safetensors first; [] if none."""
    repo_dir = Path(repo_dir)
    for single, index in _HF_WEIGHTS:
        if (repo_dir / single).is_file():  # is_file follows the cache's symlinks; a dangling one is absent
            return [repo_dir / single]
        if (repo_dir / index).is_file():
            shards = sorted(set(json.loads((repo_dir / index).read_text())["weight_map"].values()))
            paths = [repo_dir / s for s in shards]
            if all(p.is_file() for p in paths):
                return paths
    return []


# open_clip's own hub layout (laion/*, timm/*, apple/*-OpenCLIP repos): its config and weights file.
OPEN_CLIP_CONFIG = "open_clip_config.json"
_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_REPO_CONFIGS = ("config.json", OPEN_CLIP_CONFIG)


def repo_weight_files(repo_dir: PathLike) -> list[Path]:
    """The weight files of a transformers-format folder, else of an open_clip-format one
    (open_clip_config.json + open_clip_model.safetensors or open_clip_pytorch_model.bin); [] if none."""
    repo_dir = Path(repo_dir)
    if (repo_dir / "config.json").is_file():
        found = hf_repo_weight_files(repo_dir)
        if found:
            return found
    if (repo_dir / OPEN_CLIP_CONFIG).is_file():
        for name in _OPEN_CLIP_WEIGHTS:
            if (repo_dir / name).is_file():
                return [repo_dir / name]
    return []


def _local_hf_snapshot(hub_id: str) -> Optional[Path]:
    for config in _REPO_CONFIGS:
        try:
            return _hf_file(hub_id, config, local_only=True).parent
        except Exception as exc:
            if not _is_hub_failure(exc):
                raise
    return None


def resolve_hf_repo_dir(hub_id: str, *, offline: Optional[bool] = None) -> Path:
    """The local snapshot folder of a transformers-format repo (config.json + weights) or of an
    open_clip-format one (open_clip_config.json + open_clip_model.safetensors / .bin).

    Looks in the Hugging Face cache first (no request); if the config or the weights are missing and
    we are not offline, downloads only what a CLIP model needs (configs, tokenizer files including
    SentencePiece models, the safetensors weights, or the .bin weights when the repo has no safetensors).
    """
    is_off = is_offline() if offline is None else offline
    failures: list[str] = []
    last_error: Optional[BaseException] = None
    snapshot = _local_hf_snapshot(hub_id)
    if snapshot is not None and repo_weight_files(snapshot):
        return snapshot

    unreachable = None
    if not is_off:
        unreachable = unreachable_reason(_hub_url())
        is_off = unreachable is not None
    if not is_off:
        from huggingface_hub import snapshot_download

        pattern_sets = (
            # *.model: SentencePiece tokenizers (SigLIP's spiece.model, Gemma's tokenizer.model, XLM-R's).
            ["*.json", "*.txt", "*.model", "model.safetensors", "model-*-of-*.safetensors", _OPEN_CLIP_WEIGHTS[0]],
            ["pytorch_model.bin", "pytorch_model-*-of-*.bin", _OPEN_CLIP_WEIGHTS[1]],
        )
        for patterns in pattern_sets:
            try:
                snapshot = Path(
                    snapshot_download(
                        hub_id,
                        cache_dir=hf_hub_cache_dir(),
                        allow_patterns=patterns,
                        endpoint=_hf_endpoint(),
                        library_name="clipforge",
                        library_version=__version__,
                    )
                )
            except Exception as exc:
                if not _is_hub_failure(exc):
                    raise
                failures.append(f"hub {hub_id}: {_short(exc)}")
                last_error = exc
                break
            if repo_weight_files(snapshot):
                return snapshot

    raise WeightsNotFoundError(_hf_repo_message(hub_id, snapshot, failures, is_off, offline, unreachable)) from last_error


def _hf_repo_message(
    hub_id: str, snapshot: Optional[Path], failures: list[str], is_off: bool, offline_arg: Optional[bool],
    unreachable: Optional[str] = None,
) -> str:
    hf_cache = hf_hub_cache_dir()
    have_config = snapshot is not None and any((snapshot / c).is_file() for c in _REPO_CONFIGS)
    missing = [] if have_config else ["config.json"]
    missing.append("model.safetensors (or pytorch_model.bin, or their sharded forms; for an open_clip repo "
                   "open_clip_config.json and open_clip_model.safetensors)")
    where = snapshot if snapshot is not None else hf_cache / _repo_folder(hub_id) / "snapshots" / "<commit>"
    lines = [
        f"Hugging Face repo {hub_id} is not available locally: missing {' and '.join(missing)} in {where}.",
    ]
    if is_off:
        lines.append(f"Offline ({_offline_reason(offline_arg, unreachable)}), so nothing was downloaded.")
    elif failures:
        lines.append("Downloading failed:")
        lines += [f"  - {f}" for f in failures]
    lines += [
        f"Looked in the Hugging Face cache {hf_cache} (set by HF_HUB_CACHE, else HF_HOME/hub).",
        "To provide it, do one of:",
        f"  - on a machine with internet access run "
        f"`hf download {hub_id} config.json model.safetensors`, copy its Hugging Face cache folder "
        f"here and set HF_HOME (or HF_HUB_CACHE) to it;",
        "  - or use a folder holding config.json and model.safetensors directly: `--model /path/to/folder` on the "
        "command line, clipforge.load(\"/path/to/folder\") in Python;",
    ]
    if is_off and not unreachable:
        lines.append("  - or allow downloads: unset HF_HUB_OFFLINE / CLIPFORGE_OFFLINE (or pass offline=False).")
    return "\n".join(lines)
