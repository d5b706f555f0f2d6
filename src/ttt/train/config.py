"""Typed run configuration: sections as dataclasses, a TOML/YAML file, and `--section.key=value` overrides.

    cfg = load_run_config("run.toml", ["--train.steps=100", "--model.hidden_size=128"])

Unknown keys in `model` are model-config overrides (checked against the model's config class when the model is
built); unknown keys elsewhere, and values of the wrong type, raise a `ConfigError` that names them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    pass


@dataclass
class ModelSection:
    name: str = "ttt-linear-tiny"  # a ttt preset, or transformer++-SIZE / mamba-SIZE (matched to ttt-linear-SIZE)
    gradient_checkpointing: bool = False  # activation checkpointing per block
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields (--model.hidden_size=128)


@dataclass
class DataSection:
    source: str = "bundled"  # "bundled", a folder of .txt, a .jsonl file, or hf:NAME
    tokenizer: str = "byte"  # "byte", "bpe" / "bpe:VOCAB", or a local HF tokenizer folder
    seq_len: int = 256
    text_field: str = "text"
    prepared_dir: str = ""  # default: OUT_DIR/data


@dataclass
class OptimSection:
    lr: float = 3e-3
    end_lr: float = 1e-5
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    decay_norms_and_biases: bool = True  # the official JAX code decays every parameter
    clip: float = 1.0
    warmup_fraction: float = 0.1
    # TTT-MLP's inner learning rate warms up from this to ttt_base_lr over the outer warmup (official scripts:
    # 0.01 -> 0.1); -1 means "the official default for the layer type" (on for mlp, off for linear), 0 = off
    ttt_base_lr_init: float = -1.0


@dataclass
class TrainSection:
    out_dir: str = "runs/ttt"
    steps: int = 200
    batch_size: int = 8  # sequences per optimizer step, over all processes
    micro_batch_size: int = 0  # sequences per forward on one process; 0 = all of its share
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0
    eval_batches: int = 8
    ckpt_every: int = 50
    keep_last: int = 3
    compile: bool = False
    dtype: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or float32 / bfloat16
    fsdp: bool = False  # under torchrun: FSDP2 (fully_shard per block) instead of DDP
    tensorboard: bool = False  # also write the metrics as TensorBoard scalars (needs the tensorboard package)
    max_nonfinite_steps: int = 3  # consecutive steps skipped for a non-finite loss/gradient before the run stops


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        cfg = cls()
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"config section [{section}] must be a table of key = value")
            for key, value in values.items():
                set_value(cfg, section, key, value)
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


SECTIONS = {f.name for f in dataclasses.fields(RunConfig)}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        return _coerce(value, args[0], where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool) or (annotation is int and isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where} must be {annotation.__name__}, got {value!r}")
        try:
            return annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be {annotation.__name__}, got {value!r}") from None
    if annotation is str:
        return str(value)
    return value


def parse_literal(text: str) -> Any:
    """A command-line value: JSON when it parses (numbers, true/false, lists), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_value(cfg: RunConfig, section: str, key: str, value: Any) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; sections: {', '.join(sorted(SECTIONS))}")
    target = getattr(cfg, section)
    hints = typing.get_type_hints(type(target))
    if section == "model" and key == "overrides" and isinstance(value, dict):
        target.overrides.update(value)
    elif key in hints and key != "overrides":
        setattr(target, key, _coerce(value, hints[key], f"{section}.{key}"))
    elif section == "model":
        target.overrides[key] = value
    else:
        keys = ", ".join(k for k in hints if k != "overrides")
        raise ConfigError(f"unknown config key {section}.{key}; keys of [{section}]: {keys}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    if path.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        return tomllib.loads(path.read_text())
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise ConfigError("YAML config files need PyYAML (pip install pyyaml); or use TOML") from err
        return yaml.safe_load(path.read_text()) or {}
    if path.suffix == ".json":
        return json.loads(path.read_text())
    raise ConfigError(f"config file {path}: use .toml, .yaml or .json")


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    cfg = RunConfig.from_dict(read_config_file(path)) if path else RunConfig()
    for item in overrides or []:
        if not item.startswith("--") or "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like --section.key=value")
        dotted, raw = item[2:].split("=", 1)
        section, key = dotted.split(".", 1)
        set_value(cfg, section, key, parse_literal(raw))
    return cfg
