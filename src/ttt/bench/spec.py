"""What a benchmark run measures: the models, the lengths, the repeats and the limits, and the list of jobs.

A model is named without its size (`ttt-linear`, `ttt-mlp-T`, `transformer++`, `mamba`, `official-linear`, ...) and
takes the run's `--size`; each TTT model runs once per implementation in `--impl` (any name the layers accept, so a
new implementation appears here as soon as `ttt.layers.ttt.IMPLEMENTATIONS` lists it; and `aot`: the default
implementation with `ttt export` decode packages attached, in prefill and decode jobs). A job is one measurement in one
child process: (kind, model, T, batch, repeat). Jobs of one repeat alternate between models so that the noise of
a shared machine hits every model alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..layers import IMPLEMENTATIONS

KINDS = ("prefill", "decode", "train")
DTYPES = ("float32", "bfloat16")
TTT_MODELS = ("ttt-linear", "ttt-mlp", "ttt-linear-T", "ttt-mlp-T")
BASELINE_MODELS = ("transformer++", "mamba")
OFFICIAL_MODELS = ("official-linear", "official-mlp", "official-linear-T", "official-mlp-T")
MODELS = TTT_MODELS + BASELINE_MODELS + OFFICIAL_MODELS

# size name -> (preset size, config overrides). "small" is core_speed.py's d=256 shape.
SIZES: dict[str, tuple[str, dict[str, int]]] = {
    "tiny": ("tiny", {}),
    "small": ("tiny", dict(hidden_size=256, num_attention_heads=4, intermediate_size=688, vocab_size=1000)),
    "125m": ("125m", {}),
    "350m": ("350m", {}),
    "760m": ("760m", {}),
    "1.3b": ("1.3b", {}),
}


# the default implementation decoding through AOT packages (`ttt export`) built in the job for its batch size
AOT = "aot"
BENCH_IMPLEMENTATIONS = (*IMPLEMENTATIONS, AOT)


class SpecError(ValueError):
    """A bad benchmark request (unknown model, bad length list, ...): the message names the value."""


@dataclass(frozen=True)
class ModelSpec:
    """One model column: `kind` (a MODELS name), the size, and the TTT implementation (None for baselines)."""

    kind: str
    size: str
    impl: str | None = None

    @property
    def family(self) -> str:
        if self.kind.startswith("ttt-"):
            return "ttt"
        if self.kind.startswith("official-"):
            return "official"
        return self.kind

    @property
    def layer(self) -> str | None:
        return self.kind.split("-")[1] if self.family in ("ttt", "official") else None

    @property
    def backbone(self) -> str:
        if self.family in ("ttt", "official"):
            return "transformer" if self.kind.endswith("-T") else "mamba"
        return self.kind

    @property
    def preset(self) -> str:
        """Our preset name for TTT and official models (the official one is built from the same config)."""
        suffix = "-T" if self.backbone == "transformer" else ""
        return f"ttt-{self.layer}-{SIZES[self.size][0]}{suffix}"

    @property
    def label(self) -> str:
        impl = f"[{self.impl}]" if self.impl else ""
        return f"{self.kind}-{self.size}{impl}"


@dataclass
class Limits:
    """Per-job limits: memory (resident set, and RLIMIT_DATA in the child) and wall time, in GiB and seconds."""

    mem_gib: float = 14.0
    time_s: float = 300.0


@dataclass
class BenchSpec:
    """Everything a run measures. Lengths are tokens per sequence; repeats drop to `long_repeats` from `long_from`."""

    models: list[ModelSpec]
    prefill_lengths: list[int]
    decode_lengths: list[int] = field(default_factory=list)  # batch `decode_batch`, synthetic state
    decode_batch: int = 16
    decode_steps: int = 8
    train_lengths: list[int] = field(default_factory=list)
    train_batch: int = 1
    repeats: int = 3
    long_repeats: int = 1
    long_from: int = 8192
    impl_max_len: dict[str, int] = field(default_factory=lambda: {"naive": 256, "primal": 2048})
    kernels: bool = True
    kernel_batch: int = 8
    kernel_len: int = 256
    threads: int = 2
    dtype: str = "float32"
    seed: int = 0
    limits: Limits = field(default_factory=Limits)
    official_path: str | None = None
    official_python: str | None = None

    def repeats_at(self, seq_len: int) -> int:
        return self.long_repeats if seq_len >= self.long_from else self.repeats

    def lengths_for(self, model: ModelSpec, lengths: list[int]) -> list[int]:
        """The lengths `model` runs at: slow implementations stop at their cap (and run at it if none is below)."""
        cap = self.impl_max_len.get(model.impl or "")
        if cap is None:
            return list(lengths)
        kept = [t for t in lengths if t <= cap]
        return kept or [cap]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Job:
    """One measurement in one child process."""

    kind: str  # prefill (then decode at batch 1 through the cache it made) | decode | train | kernels
    model: ModelSpec | None
    seq_len: int
    batch: int
    repeat: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_lengths(text: str, flag: str = "--lengths") -> list[int]:
    """`1k,2k,4096` -> [1024, 2048, 4096]: positive, ascending, no duplicates."""
    out = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        scale = 1024 if item.lower().endswith("k") else 1
        digits = item[:-1] if scale > 1 else item
        if not digits.isdigit() or int(digits) < 1:
            raise SpecError(f"{flag}: {item!r} is not a positive length (e.g. 1024 or 1k)")
        out.append(int(digits) * scale)
    if out != sorted(set(out)):
        raise SpecError(f"{flag}: lengths must be ascending without duplicates, got {text!r}")
    return out


def parse_models(models: str, impls: str, size: str) -> list[ModelSpec]:
    """`ttt-linear,mamba` × `auto,primal` at `size` -> ModelSpecs (each TTT model once per implementation)."""
    if size not in SIZES:
        raise SpecError(f"--size: unknown size {size!r}; sizes: {', '.join(SIZES)}")
    impl_list = [s.strip() for s in impls.split(",") if s.strip()]
    for impl in impl_list:
        if impl not in BENCH_IMPLEMENTATIONS:
            names = ", ".join(BENCH_IMPLEMENTATIONS)
            raise SpecError(f"--impl: unknown implementation {impl!r}; implementations: {names}")
    if not impl_list:
        raise SpecError("--impl: give at least one implementation")
    out: list[ModelSpec] = []
    for kind in (s.strip() for s in models.split(",") if s.strip()):
        if kind not in MODELS:
            raise SpecError(f"--models: unknown model {kind!r}; models: {', '.join(MODELS)}")
        if kind.startswith("ttt-"):
            out += [ModelSpec(kind, size, impl) for impl in impl_list]
        else:
            out.append(ModelSpec(kind, size))
    if not out:
        raise SpecError("--models: give at least one model")
    return out


def plan(spec: BenchSpec) -> list[Job]:
    """All jobs in run order: repeat by repeat; in each, kernels first, then every (kind, T) with the models
    alternating (their order rotated by one each repeat so no model always runs first)."""
    jobs: list[Job] = []
    for rep in range(max(spec.repeats, spec.long_repeats)):
        if spec.kernels and rep < spec.repeats:
            jobs.append(Job("kernels", None, spec.kernel_len, spec.kernel_batch, rep))
        shift = rep % len(spec.models)
        order = spec.models[shift:] + spec.models[:shift]
        sweeps = [
            ("prefill", spec.prefill_lengths, 1),
            ("decode", spec.decode_lengths, spec.decode_batch),
            ("train", spec.train_lengths, spec.train_batch),
        ]
        for kind, lengths, batch in sweeps:
            every = sorted({t for m in order for t in spec.lengths_for(m, lengths)}) if lengths else []
            for seq_len in every:
                if rep >= spec.repeats_at(seq_len):
                    continue
                for model in order:
                    # the naive oracle only prefills: its decode and training are the primal step and autograd
                    if model.impl == "naive" and kind != "prefill":
                        continue
                    # packages change only decoding: training with them is the default implementation's
                    if model.impl == AOT and kind == "train":
                        continue
                    # the official cache has no synthetic-state entry point: its decode is the batch-1 one
                    if model.family == "official" and kind == "decode":
                        continue
                    if seq_len in spec.lengths_for(model, lengths):
                        jobs.append(Job(kind, model, seq_len, batch, rep))
    return jobs
