"""Worker processes for bench/run.py: one per library, started once, fed one call at a time.

The parent sends `(op, *args)` over a pipe and waits for the answer, so only one library computes
at any moment. Ops: "put" (store an input), "load" / "unload" (a model), "run" (one timed
measurement of a workload), "stop". A run sets `torch.set_num_threads(threads)` first (onnxruntime:
a session with that many intra-op threads), prepares its inputs untimed, then times `reps` calls.
"""

from __future__ import annotations

import gc
import os
import resource
import time
import traceback
import warnings
from contextlib import nullcontext
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from workloads import CLIPFORGE_ARCH, SGEMM_N, WeightPaths, Workload, pixels

Call = Callable[[int], Any]  # rep index -> output of that rep


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over exec, so a
    spawned worker would report the parent's peak from before it was started."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns a ModelOutput from get_*_features; 4.x returned the tensor."""
    return out if torch.is_tensor(out) else out.pooler_output


def _slice(x: torch.Tensor, w: Workload, i: int) -> torch.Tensor:
    return x[i * w.batch : (i + 1) * w.batch]


class Adapter:
    """One library: loads a model, and turns (variant, workload, threads) into a timed call."""

    def __init__(self) -> None:
        self.model: Any = None
        self.paths: Optional[WeightPaths] = None
        self.inputs: dict[str, Any] = {}  # put by the parent: "tokens", "files_<set>", "e2e_dir"
        self.cache: dict[Any, Any] = {}

    def load(self, paths: WeightPaths, train: bool) -> dict:
        raise NotImplementedError

    def unload(self) -> None:
        self.model = None
        self.cache.clear()
        gc.collect()

    def pixels(self, w: Workload) -> torch.Tensor:
        key = ("pixels", w.items, w.seed)
        if key not in self.cache:
            size = 224  # every benchmarked architecture is 224 px
            self.cache[key] = pixels(w.items, size, w.seed)
        return self.cache[key]

    def tokens(self, w: Workload) -> torch.Tensor:
        return self.inputs[f"tokens {w.key}"]

    def prepare(self, variant: str, w: Workload, threads: int) -> Call:
        if w.kind == "image":
            x = self.pixels(w)
            return lambda i: self.encode_image(_slice(x, w, i))
        if w.kind == "text":
            t = self.tokens(w)
            return lambda i: self.encode_text(variant, _slice(t, w, i))
        if w.kind == "e2e":
            return self.e2e(variant, w, threads)
        if w.kind == "train":
            return self.train_step(w)
        if w.kind == "sgemm":
            a, b = torch.randn(SGEMM_N, SGEMM_N), torch.randn(SGEMM_N, SGEMM_N)
            return lambda i: (torch.mm(a, b), None)[1]
        raise ValueError(w.kind)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, variant: str, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def e2e(self, variant: str, w: Workload, threads: int) -> Call:
        raise NotImplementedError

    def train_step(self, w: Workload) -> Call:
        raise NotImplementedError


# ---- clipforge -------------------------------------------------------------------------------------


class Clipforge(Adapter):
    def load(self, paths: WeightPaths, train: bool) -> dict:
        import clipforge

        self.paths = paths
        model, self.preprocess, _ = clipforge.load(paths.open_clip, arch=CLIPFORGE_ARCH[paths.arch])
        self.model = model.train() if train else model.eval()
        info: dict[str, Any] = {}
        if not train:
            from torch.utils.flop_counter import FlopCounterMode

            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model.encode_image(torch.zeros(1, 3, 224, 224))
            info["image_flops"] = counter.get_total_flops()
        else:
            self.snapshot = {k: v.clone() for k, v in model.state_dict().items()}
            self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
        return info

    def unload(self) -> None:
        self.snapshot = self.optimizer = None
        super().unload()

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def encode_text(self, variant: str, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    def e2e(self, variant: str, w: Workload, threads: int) -> Call:
        from clipforge.image import iter_image_batches

        files = self.inputs[f"files_{w.files}"]
        out_path = self.inputs["e2e_dir"] + f"/clipforge_{variant.replace(' ', '_')}_{w.files}.npy"
        draft = variant == "clipforge draft"

        def run(i: int) -> torch.Tensor:
            out = np.zeros((len(files), self.model.config.embed_dim), dtype=np.float32)
            for batch in iter_image_batches(files, self.preprocess, batch_size=w.batch, num_workers=threads, draft=draft):
                if batch.errors:
                    raise RuntimeError(f"clipforge could not read {batch.errors}")
                out[batch.indices] = self.model.encode_image(batch.pixels, normalize=True).numpy()
            np.save(out_path, out)
            return torch.from_numpy(out)

        return run

    def train_step(self, w: Workload) -> Call:
        model, opt = self.model, self.optimizer
        model.load_state_dict(self.snapshot)  # every timed step starts from the same weights (untimed)
        x, t = self.pixels(w), self.tokens(w)
        labels = torch.arange(w.batch)

        def step(i: int) -> dict:
            opt.zero_grad(set_to_none=True)
            logits_per_image, logits_per_text = model(x, t)
            loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
            loss.backward()
            grads = {"visual.proj": model.visual.proj.grad.clone(), "text_projection": model.text_projection.grad.clone()}
            opt.step()
            return {"loss": loss.detach(), **grads}

        return step


class ClipforgeInt8(Clipforge):
    def load(self, paths: WeightPaths, train: bool) -> dict:
        from clipforge.quantize import quantize_dynamic

        super().load(paths, train=False)
        self.model = quantize_dynamic(self.model, inplace=True)
        gc.collect()
        return {}


class OnnxRuntime(Adapter):
    """clipforge's towers exported with clipforge.export, run by onnxruntime (CPU provider)."""

    def load(self, paths: WeightPaths, train: bool) -> dict:
        import onnxruntime

        out = Path(paths.onnx_dir)
        if not (out / ".complete").exists():
            import clipforge
            from clipforge.export import export_onnx

            model, _, _ = clipforge.load(paths.open_clip, arch=CLIPFORGE_ARCH[paths.arch])
            export_onnx(model.eval(), out)
            del model
            gc.collect()
            (out / ".complete").touch()
        self.files = {"image": str(out / "image_encoder.onnx"), "text": str(out / "text_encoder.onnx")}
        self.model = True
        return {"onnxruntime": onnxruntime.__version__}

    def session(self, tower: str, threads: int):
        from clipforge.export import onnx_session

        key = (tower, threads)
        if key not in self.cache:
            self.cache[key] = onnx_session(self.files[tower], threads=threads)
        return self.cache[key]

    def prepare(self, variant: str, w: Workload, threads: int) -> Call:
        if w.kind == "image":
            sess, x = self.session("image", threads), self.pixels(w).numpy()
            return lambda i: torch.from_numpy(sess.run(None, {"pixels": x[i * w.batch : (i + 1) * w.batch]})[0])
        if w.kind == "text":
            sess, t = self.session("text", threads), self.tokens(w).numpy()
            return lambda i: torch.from_numpy(sess.run(None, {"tokens": t[i * w.batch : (i + 1) * w.batch]})[0])
        raise ValueError(w.kind)


# ---- references ------------------------------------------------------------------------------------


class _FileDataset(torch.utils.data.Dataset):
    """The plain DataLoader pipeline a user writes around open_clip: open, preprocess (a class: it pickles)."""

    def __init__(self, files: list[str], preprocess: Callable) -> None:
        self.files, self.preprocess = files, preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.preprocess(Image.open(self.files[i]))


class OpenClip(Adapter):
    def load(self, paths: WeightPaths, train: bool) -> dict:
        import open_clip

        self.paths = paths
        model, _, self.preprocess = open_clip.create_model_and_transforms(
            f"{paths.arch}-quickgelu", pretrained=paths.open_clip
        )
        self.model = model.train() if train else model.eval()
        if train:
            self.loss = open_clip.loss.ClipLoss()
            self.snapshot = {k: v.clone() for k, v in model.state_dict().items()}
            self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
        return {"open_clip": open_clip.__version__}

    def unload(self) -> None:
        self.snapshot = self.optimizer = None
        super().unload()

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def encode_text(self, variant: str, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    def e2e(self, variant: str, w: Workload, threads: int) -> Call:
        files, out_path = self.inputs[f"files_{w.files}"], self.inputs["e2e_dir"] + f"/open_clip_{w.files}.npy"

        def run(i: int) -> torch.Tensor:
            loader = torch.utils.data.DataLoader(_FileDataset(files, self.preprocess), batch_size=w.batch, num_workers=threads)
            out = torch.cat([self.model.encode_image(batch, normalize=True) for batch in loader]).numpy()
            np.save(out_path, out)
            return torch.from_numpy(out)

        return run

    def train_step(self, w: Workload) -> Call:
        model, opt = self.model, self.optimizer
        model.load_state_dict(self.snapshot)
        x, t = self.pixels(w), self.tokens(w)

        def step(i: int) -> dict:
            opt.zero_grad(set_to_none=True)
            image_features, text_features, logit_scale = model(x, t)[:3]
            loss = self.loss(image_features, text_features, logit_scale)
            loss.backward()
            grads = {"visual.proj": model.visual.proj.grad.clone(), "text_projection": model.text_projection.grad.clone()}
            opt.step()
            return {"loss": loss.detach(), **grads}

        return step


class OpenAI(Adapter):
    def load(self, paths: WeightPaths, train: bool) -> dict:
        import clip
        from references import build_openai

        # clip.load() would round the weights through fp16 (build_model) before .float() on CPU:
        # build OpenAI's fp32 CLIP instead and load the same tensors.
        model = build_openai(paths.arch)
        model.load_state_dict(torch.load(paths.openai, map_location="cpu", weights_only=True))
        self.model = model.eval()
        return {"clip": getattr(clip, "__version__", "?")}

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def encode_text(self, variant: str, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


class Transformers(Adapter):
    def load(self, paths: WeightPaths, train: bool) -> dict:
        import transformers
        from transformers import CLIPModel

        self.model = CLIPModel.from_pretrained(paths.hf).eval()
        return {"transformers": transformers.__version__, "attn": self.model.config._attn_implementation}

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=x))

    def prepare(self, variant: str, w: Workload, threads: int) -> Call:
        if w.kind == "text" and variant == "transformers longest":
            # What CLIPTokenizer(padding="longest") gives: ids up to the batch's longest caption, and a mask.
            batches = []
            for i in range(w.reps):
                t = _slice(self.tokens(w), w, i)
                length = int((t == 49407).int().argmax(1).max()) + 1
                ids = t[:, :length]
                mask = (torch.arange(length) <= (t == 49407).int().argmax(1, keepdim=True)).long()
                batches.append((ids, mask))
            return lambda i: _features(self.model.get_text_features(input_ids=batches[i][0], attention_mask=batches[i][1]))
        return super().prepare(variant, w, threads)

    def encode_text(self, variant: str, tokens: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_text_features(input_ids=tokens))


ADAPTERS: dict[str, type[Adapter]] = {
    "clipforge": Clipforge,
    "clipforge_int8": ClipforgeInt8,
    "onnxruntime": OnnxRuntime,
    "open_clip": OpenClip,
    "openai": OpenAI,
    "transformers": Transformers,
}


# ---- the serving loop --------------------------------------------------------------------------------


def run_once(adapter: Adapter, variant: str, w: Workload, threads: int, want_output: bool) -> dict:
    torch.set_num_threads(threads)
    grad = w.kind == "train"
    with (nullcontext() if grad else torch.inference_mode()):
        call = adapter.prepare(variant, w, threads)  # inputs, sessions, weight restore: untimed
        start = time.perf_counter()
        outputs = [call(i) for i in range(w.reps)]
        seconds = time.perf_counter() - start
    output = None
    if want_output:
        if isinstance(outputs[0], dict):
            output = outputs[0]
        elif outputs[0] is not None:
            output = torch.cat([o.detach().float() for o in outputs])
    return {"seconds": seconds, "output": output, "peak_rss_mb": peak_rss_mb()}


def serve(conn: Connection, name: str) -> None:
    """Worker main loop (the target of a spawned process)."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # This process was spawned, which would make DataLoader workers spawn too (a fresh interpreter
    # importing torch per iteration). Fork them, as a script run directly on Linux does.
    import multiprocessing

    multiprocessing.set_start_method("fork", force=True)
    adapter = ADAPTERS[name]()
    while True:
        op, *args = conn.recv()
        try:
            result: Any = None
            if op == "stop":
                conn.send(("ok", None))
                return
            if op == "put":
                adapter.inputs[args[0]] = args[1]
            elif op == "load":
                start = time.perf_counter()
                result = adapter.load(*args)
                result["load_s"] = time.perf_counter() - start
            elif op == "unload":
                adapter.unload()
            elif op == "run":
                result = run_once(adapter, *args)
            elif op == "rss":
                result = peak_rss_mb()
            else:
                raise ValueError(f"unknown op {op!r}")
            conn.send(("ok", result))
        except Exception:  # report to the parent, which stops the run with the traceback
            conn.send(("error", traceback.format_exc()))
