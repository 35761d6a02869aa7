"""The training run: `train(config) -> TrainResult` — setup, resume, the step loop, checkpoints,
evaluation, the final model.

One optimizer step = `accum_steps` micro-batches of `batch_size` on each of `world_size` ranks,
trained as ONE contrastive batch of world * accum * batch pairs (step.py computes it). The run
writes its resolved config to `out_dir/config.json` before the first step.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from clipforge.atomic_files import atomic_write_text
from clipforge.configs import ClipConfig, PreprocessConfig, Provenance
from clipforge.errors import ClipforgeRuntimeError, InvalidInputError
from clipforge.image import Preprocess
from clipforge.image.augment import TrainTransform
from clipforge.models import ClipModel
from clipforge.loading import tokenizer_for
from clipforge.text import Tokenizer
from clipforge.train.checkpointing import (
    load_checkpoint,
    load_latest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from clipforge.train.config import TrainConfig
from clipforge.train.data import BadSample, Batch, TrainData
from clipforge.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
)
from clipforge.train.finetune import freeze_tower, set_train_mode, wise_ft
from clipforge.train.loss import build_loss
from clipforge.train.optim import build_optimizer
from clipforge.train.schedule import LRSchedule
from clipforge.train.step import TrainModule, autocast_factory, forward_backward

logger = logging.getLogger("clipforge.train")

Callback = Callable[[dict], None]


class TrainingDivergedError(ClipforgeRuntimeError):
    """The loss became NaN or infinite: the run stopped without applying or saving the step."""


@dataclass
class TrainResult:
    model: nn.Module  # the final model, of the init's family (after WiSE-FT when configured), eval mode
    out_dir: Path
    final_path: Path  # out_dir/final.safetensors, loadable with clipforge.load(path)
    steps: int  # optimizer steps taken in total (including before a resume)
    train_metrics: dict  # the last training record written to metrics.jsonl
    eval_metrics: Optional[dict]  # the final evaluation, when val_data is configured
    skipped_samples: int  # bad samples skipped over the whole run (all ranks)
    checkpoint: Optional[Path]  # the last training checkpoint


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(config: TrainConfig) -> tuple[nn.Module, PreprocessConfig, Optional[dict[str, torch.Tensor]]]:
    """(model in fp32 on CPU, its preprocessing config, initial state for WiSE-FT or None)."""
    initial_state = None
    if config.model.init is not None:
        from clipforge.loading import load

        model, preprocess, _ = load(config.model.init, config.model.init_weights, arch=config.model.init_arch, dtype=torch.float32)
        check_trainable(model, config, str(config.model.init))
        preprocess_cfg = preprocess.config
        if config.model.wise_ft_alpha is not None:
            initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        architecture = config.model.architecture
        if isinstance(architecture, str):
            from clipforge.model_zoo import get_architecture

            clip_cfg = get_architecture(architecture)
        else:
            clip_cfg = ClipConfig.from_dict(dict(architecture))
        model = ClipModel(clip_cfg)
        model.record = model.record.replace(provenance=Provenance(
            "clipforge-train", config.run.out_dir, architecture_name=architecture if isinstance(architecture, str) else None))
        preprocess_cfg = model.record.preprocess
        if loss_kind(config, model) == "siglip":
            with torch.no_grad():
                model.logit_scale.fill_(config.optim.siglip_init_logit_scale)
    if config.data.augment.image_size is not None and config.data.augment.image_size != model.config.image_size:
        raise InvalidInputError(
            f"image_size={config.data.augment.image_size} differs from the model's {model.config.image_size}: "
            "the model's positional embeddings fix its input size"
        )
    return model.float(), preprocess_cfg, initial_state


def loss_kind(config: TrainConfig, model: nn.Module) -> str:
    """The loss a run trains with: `optim.loss` when set, else the model's own (`model.loss_kind`:
    "siglip" for SigLIP / SigLIP 2, "clip" for every other family)."""
    return config.optim.loss or getattr(model, "loss_kind", "clip")


def check_trainable(model: nn.Module, config: TrainConfig, source: str) -> None:
    """Refuse, in one line, what the trainer cannot do with this model (any family whose model has
    the model API of docs/families.md and a `loss_kind` trains)."""
    family = model.config.family
    if getattr(model, "towers", "both") != "both":
        raise InvalidInputError(f"{source}: a one-tower model ({model.towers}); training needs both towers")
    tokenizer_for(model.record)(["a photo"])  # a tokenizer file that did not come with the weights: named here
    own = getattr(model, "loss_kind", None)
    if own not in ("clip", "siglip"):
        raise InvalidInputError(f"{source}: a {family} model names no training loss (loss_kind); it cannot be trained")
    if own == "siglip" and config.optim.loss == "clip":
        # The softmax is blind to an additive bias: logit_bias would get no gradient and the trained
        # model's sigmoid probabilities (what it reports) would be left uncalibrated.
        raise InvalidInputError(
            f"{source}: a {family} model scores pairs with a sigmoid (exp(logit_scale) * cos + logit_bias); the softmax "
            "loss (optim.loss = \"clip\") cannot train its bias: use optim.loss = \"siglip\" (its default) or leave it unset"
        )


def call_evaluate(model: nn.Module, preprocess: Preprocess, tokenizer: Tokenizer, config: TrainConfig) -> dict:
    """clipforge.evaluation.evaluate, imported only when evaluation is configured."""
    from clipforge.evaluation import evaluate

    return evaluate(
        model, preprocess, tokenizer, config.data.val, config.data.classes,
        batch_size=config.run.eval_batch_size, num_workers=config.data.workers, progress=False,
    )


def call_write_report(metrics: dict, out_dir: Path, curves_jsonl: Path) -> Any:
    from clipforge.evaluation.report import write_report

    return write_report(metrics, out_dir, curves_jsonl=curves_jsonl)


def train(config: TrainConfig, *, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train (or fine-tune) a CLIP model as `config` says; resumable, single- or multi-process.

    Under torchrun every process calls this with the same config. `callbacks` are called on every
    rank with each training record (the dict written to metrics.jsonl) after logged steps.
    """
    info = init_distributed(config.run.device)
    try:
        return _Run(config, info, callbacks).run()
    finally:
        cleanup(info)


class _Run:
    def __init__(self, config: TrainConfig, info: DistInfo, callbacks: Sequence[Callback]) -> None:
        self.config, self.info, self.callbacks = config, info, list(callbacks)
        self.out_dir = Path(config.run.out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        if info.is_main:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            # The resolved config (file + overrides + defaults) beside the checkpoints it produced.
            atomic_write_text(self.out_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        barrier(info)
        device = info.device

        seed_everything(config.run.seed)  # same on every rank: identical initial weights (DDP broadcasts anyway)
        self.model, preprocess_cfg, self.initial_state = build_model(config)
        self.model.to(device)
        freeze_tower(self.model, config.model.freeze)
        if config.optim.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.loss_kind = loss_kind(config, self.model)
        # A SigLIP model's own logit_bias is the one trained; other models trained with the sigmoid loss get the loss's.
        self.loss_fn = build_loss(
            self.loss_kind, local_loss=config.optim.local_loss, dist=info,
            init_logit_bias=config.optim.siglip_init_logit_bias, model=self.model,
        ).to(device)
        self.train_module = TrainModule(self.model, self.loss_fn)
        self.module: nn.Module = self.train_module
        if info.distributed:
            self.module = nn.parallel.DistributedDataParallel(
                self.train_module, device_ids=[device] if device.type == "cuda" else None
            )
        self.optimizer = build_optimizer(
            self.train_module.named_parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay,
            betas=(config.optim.beta1, config.optim.beta2), eps=config.optim.eps,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.optim.precision == "fp16")
        self.autocast = autocast_factory(config.optim.precision, device)

        self.preprocess = Preprocess(preprocess_cfg)
        self.tokenizer = tokenizer_for(self.model.record)
        augment = config.data.augment
        transform = TrainTransform(
            self.model.config.image_size, preprocess_cfg.mean, preprocess_cfg.std, scale=augment.crop_scale,
            ratio=augment.crop_ratio, interpolation=preprocess_cfg.interpolation, hflip=augment.hflip,
            stroke_p=augment.stroke_p, background_p=augment.background_p, color_jitter=augment.color_jitter,
            hue_jitter=augment.hue_jitter, grayscale_p=augment.grayscale_p, outline_p=augment.outline_p,
            silhouette_p=augment.silhouette_p,
        )
        self.data = TrainData(
            config.data.train, transform, context_length=self.model.record.tokenizer.context_length,
            tokenizer=self.model.record.tokenizer,  # the model's own (CLIP BPE, SentencePiece, WordPiece, XLM-R)
            batch_size=config.optim.batch_size, accum_steps=config.optim.accum_steps, rank=info.rank,
            world_size=info.world_size, workers=config.data.workers, seed=config.run.seed, data_format=config.data.format,
            image_root=config.data.image_root, csv_separator=config.data.csv_separator, num_samples=config.data.num_samples,
            resampled=config.data.resampled, shuffle_buffer=config.data.shuffle_buffer,
            pin_memory=device.type == "cuda", caption_column=config.data.caption_column,
            balance_by=config.data.balance_by, balance_power=config.data.balance_power,
        )
        self.total_steps = config.optim.max_steps or config.optim.epochs * self.data.steps_per_epoch
        self.schedule = LRSchedule(config.optim.lr, self.total_steps, config.optim.warmup_steps, config.optim.min_lr, config.optim.lr_schedule)

        self.step = 0
        self.epoch = 0
        self.position = TrainData.new_position()
        self.skipped = 0
        self.logged_bad = 0
        self.last_record: dict = {}
        self.last_checkpoint: Optional[Path] = None
        self.saved_step = -1
        self._interval_samples = 0
        self._interval_start = time.perf_counter()
        self._tb: Any = None
        self._resume()

    # ---- resume --------------------------------------------------------------------------------
    def _resume(self) -> None:
        config, info = self.config, self.info
        found: Optional[tuple[Path, dict]] = None
        path: Optional[str] = None
        if info.is_main:
            if config.run.resume == "auto":
                found = load_latest_checkpoint(self.checkpoint_dir, warn=logger.warning)
                path = str(found[0]) if found else None
            elif config.run.resume:
                path = config.run.resume
        path = broadcast_object(path, info)
        if path is None:
            if info.is_main and self.metrics_path.exists():
                self.metrics_path.unlink()  # a fresh run starts a fresh log
            return
        state = found[1] if found is not None else load_checkpoint(path)
        meta = json.loads(state["meta"])
        expected = {"world_size": info.world_size, "batch_size": config.optim.batch_size,
                    "accum_steps": config.optim.accum_steps, "workers_if_webdataset": config.data.workers if self.data.webdataset else None}
        for key, value in expected.items():
            if meta.get(key) != value:
                raise InvalidInputError(f"cannot resume {path} exactly: it was written with {key}={meta.get(key)}, now {value}")
        self.train_module.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        self.step, self.epoch = int(state["step"]), int(meta["epoch"])
        self.position = meta["position"]
        self.skipped = int(meta["skipped"])
        self.saved_step = self.step
        self.last_checkpoint = Path(path)
        self._rng_to_restore = state["rng"]
        if info.is_main and self.metrics_path.exists():
            # Records written after the checkpoint (before the interruption) are replayed: drop them.
            kept = [line for line in self.metrics_path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= self.step]
            atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))
        logger.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)

    def _checkpoint(self) -> None:
        if self.saved_step == self.step:
            return
        if self.info.is_main:
            meta = {
                "epoch": self.epoch, "position": self.position, "skipped": self.skipped,
                "world_size": self.info.world_size, "batch_size": self.config.optim.batch_size,
                "accum_steps": self.config.optim.accum_steps,
                "workers_if_webdataset": self.config.data.workers if self.data.webdataset else None,
                # DataLoader worker seeds are derived from (seed, epoch, rank, worker id), not stored state.
                "worker_seed_rule": "SeedSequence([seed, epoch, rank, worker_id])",
                "config": self.config.to_dict(),
            }
            state = {
                "model": {k: v.detach().cpu() for k, v in self.train_module.model.state_dict().items()},
                "loss": {k: v.detach().cpu() for k, v in self.loss_fn.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                "schedule": self.schedule.state_dict(),
                "rng": rng_state(),
                "meta": json.dumps(meta),
            }
            self.last_checkpoint = save_checkpoint(self.checkpoint_dir, self.step, state, self.config.run.keep_checkpoints)
        self.saved_step = self.step
        barrier(self.info)

    # ---- logging -------------------------------------------------------------------------------
    def _write_record(self, record: dict) -> None:
        if not self.info.is_main:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "type"):
                    self._tb.add_scalar(key, value, record["step"])

    def _note_bad(self, bad: list[BadSample]) -> None:
        for sample in bad:
            if self.logged_bad < self.config.data.max_logged_bad_samples:
                logger.warning("skipping bad sample %s: %s", sample.key, sample.reason)
            elif self.logged_bad == self.config.data.max_logged_bad_samples:
                logger.warning("further bad samples are counted in metrics.jsonl ('skipped') but not logged")
            self.logged_bad += 1

    def _open_tensorboard(self) -> None:
        if not (self.config.run.tensorboard and self.info.is_main):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard=true but tensorboard is not installed; writing metrics.jsonl only")
            return
        self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    # ---- one optimizer step ----------------------------------------------------------------------
    def _train_step(self, micro: list[Batch]) -> Optional[torch.Tensor]:
        device = self.info.device
        counts = torch.tensor([sum(len(b) for b in micro), sum(len(b.bad) for b in micro)], dtype=torch.float64)
        counts = all_reduce_sum(counts.to(device), self.info).cpu()
        good, bad = int(counts[0]), int(counts[1])
        self.skipped += bad
        self._interval_samples += good
        lr = self.schedule.apply(self.optimizer)
        loss = None
        if good > 0:
            batches = [(b.images.to(device, non_blocking=True), b.texts.to(device, non_blocking=True)) for b in micro]
            loss = forward_backward(self.module, self.loss_fn, batches, autocast=self.autocast, scaler=self.scaler)
            self._stop_if_diverged(loss, lr)
            if self.config.optim.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                params = [p for group in self.optimizer.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(params, self.config.optim.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            clamp = getattr(self.train_module.model, "clamp_logit_scale", None)
            if clamp is not None:  # CLIP families clamp exp(logit_scale) at 100; SigLIP (big_vision) does not
                clamp()
        else:  # every sample of the global batch was bad: nothing to learn from, keep schedule and data in step
            logger.warning("step %d: no usable samples in the whole batch; optimizer step skipped", self.step)
        self.schedule.advance()
        self.step += 1
        self._lr = lr
        return loss

    def _stop_if_diverged(self, loss: torch.Tensor, lr: float) -> None:
        """A non-finite loss on any rank stops the run before the optimizer applies it: the weights
        and the newest checkpoint stay as they were, and nothing NaN is ever saved."""
        bad = torch.tensor([0.0 if bool(torch.isfinite(loss)) else 1.0], device=loss.device)
        if float(all_reduce_sum(bad, self.info).item()) == 0.0:
            return
        kept = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written yet"
        raise TrainingDivergedError(
            f"training diverged at step {self.step + 1}: the loss is {float(loss)} (learning rate {lr:.3g}); {kept}. "
            "Lower optim.lr, set optim.grad_clip_norm, or use optim.precision = \"bf16\" instead of fp16, then resume"
        )

    def _log_step(self, loss: Optional[torch.Tensor]) -> None:
        if self.step % self.config.run.log_every_steps and self.step != self.total_steps:
            return
        value = torch.zeros(1, dtype=torch.float64, device=self.info.device)
        if loss is not None:
            value += loss.double()
        value = float(all_reduce_sum(value, self.info).item()) / self.info.world_size
        elapsed = max(time.perf_counter() - self._interval_start, 1e-9)
        record = {
            "type": "train",
            "step": self.step,
            "epoch": round(self.step / self.data.steps_per_epoch, 4),
            "loss": value if loss is not None else None,
            "lr": self._lr,
            "logit_scale": float(self.train_module.model.logit_scale.detach().exp()),
            "samples_per_s": round(self._interval_samples / elapsed, 2),
            "skipped": self.skipped,
        }
        if self.loss_kind == "siglip":
            record["logit_bias"] = float(self.loss_fn.bias.detach())
        self._interval_samples, self._interval_start = 0, time.perf_counter()
        self.last_record = record
        self._write_record(record)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{value:.4f}", lr=f"{self._lr:.2e}", skipped=self.skipped)
        for callback in self.callbacks:
            callback(record)

    def _evaluate(self, final: bool = False) -> Optional[dict]:
        if not self.config.data.val:
            return None
        metrics = None
        if self.info.is_main:
            self.model.eval()
            with torch.no_grad():
                metrics = call_evaluate(self.model, self.preprocess, self.tokenizer, self.config)
            set_train_mode(self.model, self.config.model.freeze)
        self._interval_start = time.perf_counter()  # samples/s measures training, not evaluation
        if metrics is not None:
            record = {"type": "eval", "step": self.step, "final": final,
                      **{f"val/{k}": float(v) for k, v in metrics.items()}}
            self._write_record(record)
            logger.info("eval at step %d: %s", self.step, metrics)
        barrier(self.info)
        return metrics

    # ---- the run ---------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        config, info = self.config, self.info
        from tqdm.auto import tqdm

        self._open_tensorboard()
        self._bar = None
        if info.is_main and config.run.progress:
            self._bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        set_train_mode(self.model, config.model.freeze)
        if hasattr(self, "_rng_to_restore"):
            set_rng_state(self._rng_to_restore)  # last: everything above may have drawn numbers
        per_epoch = self.data.steps_per_epoch * config.optim.accum_steps
        try:
            while self.step < self.total_steps:
                micro: list[Batch] = []
                step_before = self.step
                for batch in self.data.loader(self.epoch, self.position):
                    self.data.advance(self.position, batch)
                    self._note_bad(batch.bad)
                    micro.append(batch)
                    if len(micro) < config.optim.accum_steps:
                        continue
                    loss = self._train_step(micro)
                    micro = []
                    epoch_done = self.position["micro_batches"] >= per_epoch
                    if epoch_done:
                        self.epoch += 1
                        self.position = TrainData.new_position()
                    self._log_step(loss)
                    if self._bar is not None:
                        self._bar.update(1)
                    if (epoch_done or self.step == self.total_steps
                            or (config.run.save_every_steps and self.step % config.run.save_every_steps == 0)):
                        self._checkpoint()
                    if (config.run.eval_every_steps and self.step % config.run.eval_every_steps == 0
                            and self.step != self.total_steps):
                        self._evaluate()
                    if self.step >= self.total_steps:
                        break
                if self.step == step_before:  # a loader that yields nothing would loop forever
                    raise ClipforgeRuntimeError(f"epoch {self.epoch}: the training data produced no batches")
        finally:
            if self._bar is not None:
                self._bar.close()
        self._checkpoint()
        return self._finish()

    def _finish(self) -> TrainResult:
        config, info = self.config, self.info
        from clipforge.loading import save

        final_path = self.out_dir / "final.safetensors"
        if self.initial_state is not None:
            if info.is_main:
                save(self.model, self.out_dir / "final_finetuned.safetensors")
            mixed = wise_ft(self.initial_state, self.model.state_dict(), config.model.wise_ft_alpha)
            self.model.load_state_dict(mixed)
        if info.is_main:
            save(self.model, final_path)
        eval_metrics = self._evaluate(final=True)
        if info.is_main:
            if eval_metrics is not None:
                call_write_report(eval_metrics, self.out_dir, self.metrics_path)
            if config.run.plot:
                plot_curves(self.metrics_path, self.out_dir / "curves.png")
            if self._tb is not None:
                self._tb.close()
        barrier(info)
        self.model.eval()
        return TrainResult(
            model=self.model, out_dir=self.out_dir, final_path=final_path, steps=self.step,
            train_metrics=self.last_record, eval_metrics=eval_metrics, skipped_samples=self.skipped,
            checkpoint=self.last_checkpoint,
        )


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(metrics_path: Path, out_path: Path) -> Optional[Path]:
    """Loss, learning rate and temperature (and eval metrics, if any) against step, as a PNG."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.info("matplotlib is not installed; no curves plot")
        return None
    if not Path(metrics_path).exists():
        return None
    records = read_metrics(metrics_path)
    train_records = [r for r in records if r.get("type") == "train" and r.get("loss") is not None]
    eval_records = [r for r in records if r.get("type") == "eval"]
    if not train_records:
        return None
    panels = 4 if eval_records else 3
    fig = Figure(figsize=(4 * panels, 3.2))
    FigureCanvasAgg(fig)  # attaches an Agg canvas: no GUI backend, no global matplotlib state
    steps = [r["step"] for r in train_records]
    for i, (key, title) in enumerate([("loss", "training loss"), ("lr", "learning rate"), ("logit_scale", "exp(logit_scale)")]):
        ax = fig.add_subplot(1, panels, i + 1)
        ax.plot(steps, [r[key] for r in train_records])
        ax.set_title(title)
        ax.set_xlabel("step")
    if eval_records:
        ax = fig.add_subplot(1, panels, panels)
        # accuracies and recalls only (not counts or chance levels)
        keys = sorted({k for r in eval_records for k in r if k.startswith("val/") and ("top" in k or "R@" in k)})
        for key in keys:
            ax.plot([r["step"] for r in eval_records], [r.get(key, math.nan) for r in eval_records], marker="o", label=key[4:])
        ax.set_title("evaluation")
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    return out_path
