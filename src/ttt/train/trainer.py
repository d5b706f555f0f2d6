"""The training loop: one code path from one CPU to many GPUs.

Per optimizer step: the global batch (train.batch_size windows of seq_len + 1 tokens) is split over processes,
each process runs it in micro-batches, and the loss is the mean next-token cross-entropy over every scored token of
the global batch (BOS targets are not scored, as the official loss mask), so gradient accumulation and data
parallelism give the same step as one process with the whole batch.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from transformers import PreTrainedModel

from ..data import PreparedData, Tokenizer, load_prepared, prepare
from ..hf_compat import enable_activation_checkpointing
from ..integrity import DamagedFileError
from .checkpoint import checkpoint_dirs, latest_checkpoint, load_checkpoint, save_checkpoint, set_aside, set_rng_state
from .config import ConfigError, RunConfig
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed, unwrap, wrap_model
from .models import build_model, count_params
from .optim import InnerLRWarmup, build_optimizer, lr_at
from .pretrained import FINAL_FOLDER, save_pretrained_folder

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def lm_loss_sum(model: nn.Module, windows: Tensor, bos_id: int) -> tuple[Tensor, Tensor]:
    """Σ next-token NLL over the scored targets of `windows` [B, T + 1] (BOS targets are not scored), and their
    count."""
    inputs, targets = windows[:, :-1], windows[:, 1:].clone()
    targets[targets == bos_id] = -100
    logits = model(input_ids=inputs, use_cache=False).logits
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    return loss, (targets != -100).sum()


def autocast_for(dtype: str, device: torch.device):
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if dtype not in ("auto", "float32"):
        raise ConfigError(f"train.dtype must be auto, float32 or bfloat16, got {dtype!r}")
    return nullcontext()


class Trainer:
    """One training run of a causal LM (a TTT preset or a matched Transformer++ / Mamba baseline) on one corpus.

    `Trainer(cfg, resume=False, progress=True).run()` prepares the data (`cfg.data`: tokenized once into
    `data.prepared_dir`, default `train.out_dir/data`), builds the model (`cfg.model`), and runs `train.steps` AdamW
    steps (`cfg.optim`: warmup then cosine decay, gradient clipping) of `train.batch_size` windows [B, data.seq_len + 1]
    tokens each (the batch is split over processes under torchrun: DDP, or FSDP2 with `train.fsdp`; and into
    `train.micro_batch_size` chunks for gradient accumulation). A step whose loss or gradient norm is not finite is
    skipped. Into `train.out_dir` it writes config.json, metrics.jsonl (one record per step: loss, lr, grad_norm,
    tokens_per_s every train.log_every steps, val_loss every train.eval_every steps), checkpoints/step_XXXXXXXX
    every train.ckpt_every steps and at the end (the newest train.keep_last kept; 0: all), and final/ (a Hugging Face
    save_pretrained folder with the tokenizer) at the last step.

    `resume=True` continues from the newest intact checkpoint in `train.out_dir` (damaged newer ones are set aside),
    with the same data order; optimizer options may change (recorded in config_history.jsonl), the model, data, batch
    size and seed may not. `progress`: a tqdm bar on the main process.

    `run()` returns {"history": [the metric records of the steps run], "params": the model's parameter count,
    "out_dir": str}. Raises ConfigError for a configuration the run cannot use (train.out_dir a file; checkpoints
    there without `resume`; a changed model, data, batch size or seed on resume; a batch size that the processes or
    micro-batches do not divide; a checkpoint of another model; too few validation windows for train.eval_every;
    train.tensorboard without the tensorboard package),
    DataError (ttt.data) for data that cannot be read or prepared, DamagedFileError when checkpoints exist but none
    is intact, and NonFiniteError after more than train.max_nonfinite_steps consecutive non-finite steps."""

    def __init__(self, cfg: RunConfig, resume: bool = False, progress: bool = True) -> None:
        self.cfg = cfg
        self.resume = resume
        self.progress = progress
        self._validate()
        self.info: DistInfo = init_distributed()
        self.out = Path(cfg.train.out_dir)
        self.ckpt_dir = self.out / "checkpoints"

    def _validate(self) -> None:
        """What the typed config cannot check alone (its options' ranges are checked when they are set)."""
        out = Path(self.cfg.train.out_dir)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"train.out_dir {str(out)!r} is a file, not a folder: choose another train.out_dir")

    def prepare_data(self) -> PreparedData:
        d = self.cfg.data
        folder = Path(d.prepared_dir) if d.prepared_dir else self.out / "data"
        if self.info.is_main:
            data = prepare(d.source, folder, tokenizer=d.tokenizer, text_field=d.text_field, seq_len=d.seq_len)
        barrier(self.info)
        if not self.info.is_main:
            data = load_prepared(folder)
        return data

    def batches(self, loader) -> Iterator[Tensor]:
        while True:
            yield from loader

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            cleanup(self.info)

    def _run(self) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        t = cfg.train
        existing = latest_checkpoint(self.ckpt_dir)
        if existing is not None and not self.resume:
            raise ConfigError(
                f"train.out_dir {str(self.out)!r} holds checkpoints of an earlier run (newest: {existing.name}); "
                "pass --resume (resume=True) to continue it, or choose another train.out_dir"
            )
        changes = self._config_changes() if self.resume else {}
        torch.manual_seed(t.seed)
        data = self.prepare_data()
        tok = data.tokenizer
        # transformers' @wraps(nn.Module.to) on PreTrainedModel.to hides the bound method from mypy
        model = build_model(cfg.model.name, tok.vocab_size, cfg.model.overrides).to(info.device)  # type: ignore[arg-type]
        if cfg.model.gradient_checkpointing:
            enable_activation_checkpointing(model)
        n_params = count_params(model)
        inner_warmup = InnerLRWarmup(model, cfg.optim, t.steps)
        if t.batch_size % info.world_size:
            raise ConfigError(f"train.batch_size={t.batch_size} must be a multiple of the {info.world_size} processes")
        share = t.batch_size // info.world_size
        micro = t.micro_batch_size or share
        if share % micro:
            raise ConfigError(f"train.micro_batch_size={micro} must divide the per-process batch {share}")
        loader = data.loader(
            "train", cfg.data.seq_len, t.batch_size, seed=t.seed, rank=info.rank, world_size=info.world_size
        )

        start_step = 0
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        latest, checkpoint = self._load_newest_intact(model) if self.resume else (None, None)
        if latest is None and self.resume and info.is_main:
            print(f"no checkpoint under {self.ckpt_dir}: starting from step 0")
        # the optimizer is built on the wrapped model: FSDP2 replaces the parameters by sharded ones
        model = wrap_model(model, info, t.fsdp)
        optimizer = build_optimizer(model, cfg.optim)
        if latest is not None and checkpoint is not None:
            start_step = self._restore(latest, checkpoint, model, optimizer, loader)
            if info.is_main:
                self._truncate_metrics(start_step)
                self._record_config_changes(start_step, changes)
        elif info.is_main:
            # from step 0: records of a run killed before its first checkpoint are not this run's
            self._truncate_metrics(0)
            cfg.save(self.out / "config.json")
        if t.compile:
            model = torch.compile(model)
        stream = self.batches(loader)
        metrics_file = self.out / "metrics.jsonl"
        bar = None
        if self.progress and info.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=t.steps, initial=start_step, desc=cfg.model.name, dynamic_ncols=True, mininterval=1.0)
        board = self._tensorboard() if t.tensorboard and info.is_main else None
        history: list[dict[str, Any]] = []
        tokens_seen, clock = 0, time.perf_counter()
        nonfinite = 0  # consecutive steps skipped for a non-finite loss or gradient
        model.train()
        for step in range(start_step, t.steps):
            lr = lr_at(step, t.steps, cfg.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inner_warmup.apply(step)
            windows = next(stream).to(info.device)
            scored = all_reduce_sum((windows[:, 1:] != tok.bos_id).sum().to(info.device), info).item()
            total = torch.zeros((), device=info.device)
            for chunk in windows.split(micro):
                with autocast_for(t.dtype, info.device):
                    loss_sum, _ = lm_loss_sum(model, chunk, tok.bos_id)
                # data-parallel gradients are averaged over processes: scale so the step is the global mean
                (loss_sum * info.world_size / scored).backward()
                total += loss_sum.detach()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip)
            loss = all_reduce_sum(total, info).item() / scored
            # every process sees the same (reduced) norm and loss, so all skip or none does
            finite = math.isfinite(float(grad_norm)) and math.isfinite(loss)
            if finite:
                optimizer.step()
                nonfinite = 0
            else:
                nonfinite += 1
                self._nonfinite(step + 1, nonfinite, loss, float(grad_norm))
            optimizer.zero_grad(set_to_none=True)
            tokens_seen += windows.numel() * info.world_size
            done = step + 1
            record = {"step": done, "loss": loss, "lr": lr, "grad_norm": float(grad_norm)}
            if not finite:
                record["skipped"] = True
            if inner_warmup.active:
                record["ttt_base_lr"] = inner_warmup.layers[0].ttt_base_lr
            if done % t.log_every == 0 or done == t.steps:
                elapsed = time.perf_counter() - clock
                record["tokens_per_s"] = tokens_seen / max(elapsed, 1e-9)
            if t.eval_every and (done % t.eval_every == 0 or done == t.steps):
                record.update(evaluate_loss(unwrap(model), data, cfg, info))
                model.train()
            history.append(record)
            if info.is_main:
                with open(metrics_file, "a") as f:
                    f.write(json.dumps(record) + "\n")
                if board is not None:
                    for key, value in record.items():
                        if key != "step":
                            board.add_scalar(key, value, done)
                if bar is not None:
                    bar.update(1)
                    if "tokens_per_s" in record:
                        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}", tok_s=f"{record['tokens_per_s']:.0f}")
            if done % t.ckpt_every == 0 or done == t.steps:
                self._save(done, model, optimizer, loader, n_params, tok if done == t.steps else None)
        if bar is not None:
            bar.close()
        if board is not None:
            board.close()
        return {"history": history, "params": n_params, "out_dir": str(self.out)}

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ConfigError("train.tensorboard=true needs the tensorboard package (pip install tensorboard)") from err
        return SummaryWriter(str(self.out / "tensorboard"))

    def _nonfinite(self, step: int, count: int, loss: float, grad_norm: float) -> None:
        """A step with a non-finite loss or gradient norm is skipped (the weights and the optimizer state stay as
        they were); more than train.max_nonfinite_steps in a row stop the run with an error that says why."""
        limit = self.cfg.train.max_nonfinite_steps
        what = f"step {step}: loss {loss}, gradient norm {grad_norm}"
        if count > limit:
            raise NonFiniteError(
                f"{what}: {count} consecutive steps with a non-finite loss or gradient (train.max_nonfinite_steps = "
                f"{limit}); the weights are those of the last finite step. Known cause: TTT-MLP's gradient through "
                "its inner loop grows exponentially with the sequence length while its inner rate is small (the "
                "default inner-rate warmup starts at 0.01); at data.seq_len 8192 it overflows float32. Try "
                "--optim.ttt_base_lr_init=0.1 (no inner-rate warmup), a shorter data.seq_len, or a lower optim.lr "
                "(docs/training.md, 'Non-finite gradients')."
            )
        if self.info.is_main:
            print(f"warning: {what}: non-finite, optimizer step skipped ({count} in a row)", flush=True)

    def _config_changes(self) -> dict[str, list[Any]]:
        """On resume: the options that differ from the run's config.json ({"optim.lr": [old, new]}). Changes that
        would make the continuation another run (the model, the data, the batch size or seed) raise ConfigError."""
        path = self.out / "config.json"
        if not path.is_file():
            return {}
        before = _flat(RunConfig.from_dict(json.loads(path.read_text())).to_dict())
        after = _flat(self.cfg.to_dict())
        keys = sorted(set(before) | set(after))
        changed = {k: [before.get(k), after.get(k)] for k in keys if before.get(k) != after.get(k)}
        fixed = [k for k in changed if k.split(".")[0] in ("model", "data") or k in ("train.batch_size", "train.seed")]
        if fixed:
            details = "; ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in fixed)
            raise ConfigError(
                f"cannot resume {str(self.out)!r} with changed {', '.join(fixed)} ({details}): another model config, "
                "other data or another batch order cannot continue this run; start a new run"
            )
        return changed

    def _record_config_changes(self, step: int, changed: dict[str, list[Any]]) -> None:
        """What runs from `step` on is the new config: config.json is rewritten with it and the change appended to
        config_history.jsonl ({"step", "changed"})."""
        path = self.out / "config.json"
        if changed or not path.is_file():
            self.cfg.save(path)
        if changed:
            with open(self.out / "config_history.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "changed": changed}) + "\n")
            summary = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            print(f"from step {step}: {summary} (recorded in config_history.jsonl)", file=sys.stderr)

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric records past the checkpoint resumed from (they are recomputed, identically), and a line that
        a kill cut short."""
        path = self.out / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if _metric_step(line) <= step]
            path.write_text("".join(line + "\n" for line in kept))

    def _save(self, step: int, model: nn.Module, optimizer, loader, n_params: int, final: Tokenizer | None) -> None:
        """A checkpoint of step `step`; at the last step (`final`: the run's tokenizer) also the Hugging Face folder
        `out_dir/final` (save_pretrained weights + tokenizer; see ttt.train.pretrained)."""
        # full_state_dict=True: plain, unsharded tensors
        model_state = cast(dict[str, torch.Tensor], get_model_state_dict(model, options=FULL))
        optim_state = get_optimizer_state_dict(model, optimizer, options=FULL)
        if self.info.is_main:
            trainer_state = {
                "step": step,
                "data": loader.state_dict(),
                "model_name": self.cfg.model.name,
                "model_overrides": self.cfg.model.overrides,
                "params": n_params,
                "world_size": self.info.world_size,
            }
            save_checkpoint(self.ckpt_dir, step, model_state, optim_state, trainer_state, self.cfg.train.keep_last)
            if final is not None:
                save_pretrained_folder(
                    cast(PreTrainedModel, unwrap(model)), final, self.out / FINAL_FOLDER, model_state, overwrite=True
                )
        barrier(self.info)

    def _load_newest_intact(self, model: nn.Module) -> tuple[Path | None, tuple[dict, dict] | None]:
        """The newest checkpoint whose files match their checksums and decode, loaded into `model`. Damaged newer
        ones are named in a warning and renamed `damaged_step_X` (kept, never resumed from). Raises DamagedFileError
        naming the damage when checkpoints exist but none is intact."""
        damaged: list[tuple[Path, Exception]] = []
        found: tuple[Path | None, tuple[dict, dict] | None] = (None, None)
        for path in reversed(checkpoint_dirs(self.ckpt_dir)):
            try:
                found = (path, self._load(path, model))
                break
            except (DamagedFileError, FileNotFoundError) as err:
                damaged.append((path, err))
        barrier(self.info)
        if damaged and self.info.is_main:
            for path, error in damaged:
                kept = set_aside(path)
                warnings.warn(f"checkpoint {path.name} is damaged ({error}); set aside as {kept.name}", stacklevel=2)
            if found[0] is not None:
                print(f"resuming from the newest intact checkpoint, {found[0].name}", file=sys.stderr)
        if found[0] is None and damaged:
            raise DamagedFileError(damaged[0][0], f"no intact checkpoint to resume from; newest: {damaged[0][1]}")
        return found

    def _load(self, path: Path, model: nn.Module) -> tuple[dict, dict]:
        """Read a checkpoint and load its weights into the (not yet wrapped) model, after checking it fits."""
        model_state, extra, trainer_state = load_checkpoint(path)
        if (trainer_state["model_name"], trainer_state["model_overrides"]) != (
            self.cfg.model.name,
            self.cfg.model.overrides,
        ):
            raise ConfigError(
                f"checkpoint {path} is from model {trainer_state['model_name']} {trainer_state['model_overrides']}, "
                f"this run builds {self.cfg.model.name} {self.cfg.model.overrides}: another model config"
            )
        expected = model.state_dict()
        bad = [k for k in expected if k not in model_state or model_state[k].shape != expected[k].shape]
        if bad:
            raise ConfigError(f"checkpoint {path} does not fit this model (first mismatch: {bad[0]})")
        model.load_state_dict(model_state)
        return extra, trainer_state

    def _restore(self, path: Path, checkpoint: tuple[dict, dict], model: nn.Module, optimizer, loader) -> int:
        extra, trainer_state = checkpoint
        set_optimizer_state_dict(model, optimizer, extra["optimizer"], options=StateDictOptions(full_state_dict=True))
        set_rng_state(extra["rng"])
        loader.load_state_dict(trainer_state["data"])
        if self.info.is_main:
            print(f"resumed from {path} (step {trainer_state['step']})")
        return int(trainer_state["step"])


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """{"optim.lr": 0.003, "model.overrides.hidden_size": 64, ...}"""
    out = {}
    for section, values in config.items():
        for key, value in values.items():
            if isinstance(value, dict):
                out.update({f"{section}.{key}.{k}": v for k, v in value.items()})
            else:
                out[f"{section}.{key}"] = value
    return out


class NonFiniteError(RuntimeError):
    """Training stopped: too many consecutive steps with a non-finite loss or gradient."""


def _metric_step(line: str) -> float:
    """The step of one metrics.jsonl line; infinity for a torn (unparsable) one, so it is dropped."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


@torch.no_grad()
def evaluate_loss(model: nn.Module, data: PreparedData, cfg: RunConfig, info: DistInfo) -> dict[str, float]:
    """Mean validation loss over the first train.eval_batches batches of the validation split (deterministic)."""
    model.eval()
    t = cfg.train
    n_val = len(data.windows("val", cfg.data.seq_len))
    batch = min(t.batch_size, n_val) // info.world_size * info.world_size
    if batch < 1:
        raise ConfigError(f"the validation split holds {n_val} windows of data.seq_len + 1 tokens: too few to evaluate")
    loader = data.loader("val", cfg.data.seq_len, batch, shuffle=False, rank=info.rank, world_size=info.world_size)
    total = torch.zeros((), device=info.device)
    count = torch.zeros((), device=info.device)
    for i, windows in enumerate(loader):
        if i >= t.eval_batches:
            break
        loss_sum, n = lm_loss_sum(model, windows.to(info.device), data.tokenizer.bos_id)
        total += loss_sum
        count += n
    total, count = all_reduce_sum(total, info), all_reduce_sum(count, info)
    val = (total / count.clamp(min=1)).item()
    return {"val_loss": val, "val_ppl": math.exp(min(val, 50))}
