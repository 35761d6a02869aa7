"""Peak memory of `load_prompt_encoder` on an SDXL-sized single file: full-size CLIP ViT-L/14 text
(123M) + OpenCLIP bigG/14 text (695M) in fp16, next to a multi-GB dummy UNet that must not be read.

    python bench/bench_prompt_encoder.py --unet-gb 5 [--dir /tmp/sdxl-bench]

Writes the file once (random encoder weights, zero-filled UNet tensors), then loads it in fresh
processes (fp16 and fp32) and prints each one's peak RSS and time. The figures go in
docs/stable-diffusion.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

# VmHWM (peak resident set) is per process image and reset at exec, unlike ru_maxrss, which a child
# inherits from whatever forked it.
PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024"
LOAD = f"""
import sys, time, torch
import clipforge
t = time.perf_counter()
enc = clipforge.load_prompt_encoder(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
out = enc(["a red rose, oil painting"])
print(f"{{time.perf_counter() - t:.1f}}", {PEAK}, "x".join(map(str, out.hidden_states.shape)),
      "x".join(map(str, out.pooled.shape)), sum(p.numel() for m in enc.encoders.values() for p in m.parameters()))
"""
BASELINE = f"import torch, clipforge.tasks.prompt_encoder, clipforge.loading; print({PEAK})"


def text_encoder(prefix: str, width: int, layers: int, projection: bool, hf: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(width)
    rand = lambda *shape: (torch.randn(*shape, generator=g) * 0.02).half()  # noqa: E731
    out: dict[str, torch.Tensor] = {}
    if hf:
        t = prefix + "text_model."
        out[t + "embeddings.token_embedding.weight"] = rand(49408, width)
        out[t + "embeddings.position_embedding.weight"] = rand(77, width)
        for i in range(layers):
            b = f"{t}encoder.layers.{i}."
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                out[b + f"self_attn.{name}.weight"], out[b + f"self_attn.{name}.bias"] = rand(width, width), rand(width)
            for ln in ("layer_norm1", "layer_norm2"):
                out[b + f"{ln}.weight"], out[b + f"{ln}.bias"] = torch.ones(width).half(), rand(width)
            out[b + "mlp.fc1.weight"], out[b + "mlp.fc1.bias"] = rand(4 * width, width), rand(4 * width)
            out[b + "mlp.fc2.weight"], out[b + "mlp.fc2.bias"] = rand(width, 4 * width), rand(width)
        out[t + "final_layer_norm.weight"], out[t + "final_layer_norm.bias"] = torch.ones(width).half(), rand(width)
        return out
    out[prefix + "token_embedding.weight"] = rand(49408, width)
    out[prefix + "positional_embedding"] = rand(77, width)
    for i in range(layers):
        b = f"{prefix}transformer.resblocks.{i}."
        out[b + "attn.in_proj_weight"], out[b + "attn.in_proj_bias"] = rand(3 * width, width), rand(3 * width)
        out[b + "attn.out_proj.weight"], out[b + "attn.out_proj.bias"] = rand(width, width), rand(width)
        for ln in ("ln_1", "ln_2"):
            out[b + f"{ln}.weight"], out[b + f"{ln}.bias"] = torch.ones(width).half(), rand(width)
        out[b + "mlp.c_fc.weight"], out[b + "mlp.c_fc.bias"] = rand(4 * width, width), rand(4 * width)
        out[b + "mlp.c_proj.weight"], out[b + "mlp.c_proj.bias"] = rand(width, 4 * width), rand(width)
    out[prefix + "ln_final.weight"], out[prefix + "ln_final.bias"] = torch.ones(width).half(), rand(width)
    if projection:
        out[prefix + "text_projection"] = rand(width, width)
    out[prefix + "logit_scale"] = torch.tensor(4.6).half()
    return out


def write(path: Path, unet_gb: float) -> None:
    from safetensors.torch import save_file

    state = {**text_encoder("conditioner.embedders.0.transformer.", 768, 12, False, hf=True),
             **text_encoder("conditioner.embedders.1.model.", 1280, 32, True, hf=False)}
    chunk = 256 * 1024 * 1024  # fp16 elements per dummy UNet tensor (512 MB)
    for i in range(int(unet_gb * 1024**3 / 2 / chunk)):
        state[f"model.diffusion_model.dummy.{i}.weight"] = torch.zeros(chunk, dtype=torch.float16)
    save_file(state, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unet-gb", type=float, default=5.0)
    parser.add_argument("--dir", default="/tmp/sdxl-bench")
    parser.add_argument("--write", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write(Path(args.write), args.unet_gb)
        return
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sdxl_sized.safetensors"
    if not path.exists():  # written by a child process, so this one stays small
        subprocess.run([sys.executable, __file__, "--write", str(path), "--unet-gb", str(args.unet_gb)], check=True)
    size_gb = path.stat().st_size / 1024**3
    base = int(subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True, check=True).stdout)
    print(f"file: {path} ({size_gb:.2f} GiB); python + torch + clipforge alone: {base} MiB peak RSS")
    for dtype in ("float16", "float32"):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", LOAD, str(path), dtype], capture_output=True, text=True, check=True)
        seconds, rss, hidden, pooled, params = out.stdout.split(maxsplit=4)
        print(f"{dtype}: load + one prompt {seconds} s (process {time.perf_counter() - started:.1f} s), peak RSS {rss} MiB, "
              f"hidden {hidden}, pooled {pooled}, parameters {params.strip()}")


if __name__ == "__main__":
    main()
