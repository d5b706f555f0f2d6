"""Typed run configuration: sections as dataclasses, a TOML/YAML file, and `--section.key=value` overrides.

    cfg = load_run_config("run.toml", ["--train.steps=100", "--model.hidden_size=128"])

Unknown keys in `model` are model-config overrides (checked against the model's config class when the model is
built); unknown keys elsewhere, and values of the wrong type, raise a `ConfigError` that names them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass


class ConfigError(ValueError):
    pass


# Every option is a pydantic field: its type, default, valid range (ge/gt/le/lt or a Literal) and meaning live here,
# are checked when a value is set (file, command line, or attribute assignment), and `ttt train --help` is generated
# from them. tests/train/test_config_ranges.py fails for a numeric option added without a range.
STRICT = ConfigDict(validate_assignment=True, extra="forbid", arbitrary_types_allowed=False)


@dataclass(config=STRICT)
class ModelSection:
    name: str = Field(default="ttt-linear-tiny", description="a ttt preset, or transformer++-SIZE / mamba-SIZE")
    gradient_checkpointing: bool = Field(default=False, description="activation checkpointing per block")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="model config fields (--model.hidden_size=128), checked against the model"
    )


@dataclass(config=STRICT)
class DataSection:
    source: str = Field(default="bundled", description="bundled, a folder of .txt, a .jsonl file, or hf:NAME")
    tokenizer: str = Field(
        default="byte", description="byte, bpe / bpe:VOCAB, or a local Hugging Face tokenizer folder"
    )
    seq_len: int = Field(default=256, ge=1, description="tokens per training window")
    text_field: str = Field(default="text", description="the text field of .jsonl / hf: sources")
    prepared_dir: str = Field(default="", description="where the tokenized data lives (default: OUT_DIR/data)")


@dataclass(config=STRICT)
class OptimSection:
    lr: float = Field(default=3e-3, gt=0, description="peak AdamW learning rate")
    end_lr: float = Field(default=1e-5, ge=0, description="learning rate at the end of the cosine decay")
    beta1: float = Field(default=0.9, ge=0, lt=1, description="AdamW beta1")
    beta2: float = Field(default=0.95, ge=0, lt=1, description="AdamW beta2")
    weight_decay: float = Field(default=0.1, ge=0, description="AdamW weight decay")
    decay_norms_and_biases: bool = Field(default=True, description="decay every parameter, as the official JAX code")
    clip: float = Field(default=1.0, gt=0, description="gradient-norm clipping threshold")
    warmup_fraction: float = Field(default=0.1, ge=0, le=1, description="fraction of the steps with linear warmup")
    ttt_base_lr_init: float = Field(
        default=-1.0,
        ge=-1,
        description="TTT-MLP's inner learning rate warms up from this to ttt_base_lr over the outer warmup "
        "(-1: the official default for the layer type, 0: off)",
    )

    @field_validator("ttt_base_lr_init")
    @classmethod
    def _minus_one_or_rate(cls, value: float) -> float:
        if value < 0 and value != -1:
            raise ValueError("must be -1 (the layer type's default) or a rate >= 0")
        return value


@dataclass(config=STRICT)
class TrainSection:
    out_dir: str = Field(default="runs/ttt", description="the run folder (config, metrics, checkpoints, final/)")
    steps: int = Field(default=200, ge=1, description="optimizer steps")
    batch_size: int = Field(default=8, ge=1, description="sequences per optimizer step, over all processes")
    micro_batch_size: int = Field(
        default=0,
        ge=0,
        description="sequences per forward on one process (gradient accumulation); 0 = all of its share",
    )
    seed: int = Field(default=0, ge=0, description="seed of the initialisation and the data order")
    log_every: int = Field(default=10, ge=1, description="steps between tokens/s records")
    eval_every: int = Field(default=0, ge=0, description="steps between validation losses; 0 = never")
    eval_batches: int = Field(default=8, ge=1, description="validation batches per evaluation")
    ckpt_every: int = Field(default=50, ge=1, description="steps between checkpoints (and the last step)")
    keep_last: int = Field(default=3, ge=0, description="checkpoints kept (the newest); 0 = keep every checkpoint")
    compile: bool = Field(default=False, description="torch.compile the model")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="auto: bf16 autocast on CUDA, float32 on CPU"
    )
    fsdp: bool = Field(default=False, description="under torchrun: FSDP2 (fully_shard per block) instead of DDP")
    tensorboard: bool = Field(
        default=False, description="also write TensorBoard scalars (needs the tensorboard package)"
    )
    max_nonfinite_steps: int = Field(
        default=3, ge=0, description="consecutive steps skipped for a non-finite loss/gradient before the run stops"
    )


@dataclass(config=STRICT)
class RunConfig:
    """One training run's whole configuration: four sections of typed, range-checked options.

    `model` (ModelSection: preset or baseline name, config overrides, activation checkpointing), `data` (DataSection:
    source, tokenizer, seq_len, prepared_dir), `optim` (OptimSection: AdamW and its schedule), `train`
    (TrainSection: out_dir, steps, batch sizes, seed, logging / evaluation / checkpoint intervals, dtype, FSDP).
    `RunConfig()` holds the defaults; `RunConfig.from_dict({"optim": {"lr": 1e-3}})`, `load_run_config(path,
    ["--optim.lr=1e-3"])` (a TOML, YAML or JSON file, then overrides) and `set_value(cfg, section, key, value)` build or
    change one; `to_dict()` / `save(path)` write it (the run's config.json). Every assignment is validated.

    Raises ConfigError (from `set_value`, `from_dict`, `load_run_config`) naming the option, the value and its valid
    range for a bad value, and naming the key for an unknown one (a section that is not a table, too)."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection = Field(default_factory=TrainSection)

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
        """Write the config as JSON, atomically (a temporary file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)


_SECTION_CLASSES: tuple[tuple[str, type[Any]], ...] = (
    ("model", ModelSection),
    ("data", DataSection),
    ("optim", OptimSection),
    ("train", TrainSection),
)
SECTIONS_IN_ORDER = [f.name for f in dataclasses.fields(RunConfig)]
SECTIONS = set(SECTIONS_IN_ORDER)
OPTIONS: dict[str, dict[str, Any]] = {
    name: dict(cls.__pydantic_fields__)  # pydantic dataclasses: the field infos (defaults, bounds, descriptions)
    for name, cls in _SECTION_CLASSES
}
OPTION_TYPES: dict[str, dict[str, Any]] = {
    section: {key: info.annotation for key, info in fields.items()} for section, fields in OPTIONS.items()
}


def parse_literal(text: str) -> Any:
    """A command-line value: JSON when it parses (numbers, true/false, lists), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def option_range(section: str, key: str) -> str:
    """The valid values of an option in words ("a number > 0", "one of auto, float32, bfloat16", ...)."""
    info = OPTIONS[section][key]
    kind = OPTION_TYPES[section][key]
    if typing.get_origin(kind) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(kind)))
    bounds = []
    for item in info.metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                bounds.append(f"{symbol} {getattr(item, attr)}")
    name = {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(kind, "a table")
    return name + (" " + " and ".join(bounds) if bounds else "")


def set_value(cfg: RunConfig, section: str, key: str, value: Any) -> None:
    """Set `section.key` to `value` (checked); unknown keys of `model` are model-config overrides.

    Raises ConfigError naming the option, the value and the valid range."""
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; sections: {', '.join(sorted(SECTIONS))}")
    target = getattr(cfg, section)
    if section == "model" and key == "overrides" and isinstance(value, dict):
        target.overrides.update(value)
    elif key in OPTIONS[section] and key != "overrides":
        try:
            setattr(target, key, value)
        except ValidationError as err:
            reason = err.errors()[0]["msg"]
            raise ConfigError(
                f"{section}.{key}={value!r} is not valid: {reason} (valid: {option_range(section, key)})"
            ) from None
    elif section == "model":
        target.overrides[key] = value
    else:
        keys = ", ".join(k for k in OPTIONS[section] if k != "overrides")
        raise ConfigError(f"unknown config key {section}.{key}; keys of [{section}]: {keys}")


def options_help() -> str:
    """Every option as `--section.key=TYPE  default D, valid range: meaning`, from the typed config."""
    lines = []
    for section in SECTIONS_IN_ORDER:
        for key, info in OPTIONS[section].items():
            if key == "overrides":
                continue
            default = info.default if info.default_factory is None else info.default_factory()
            lines.append(f"  --{section}.{key}  (default {default!r}; {option_range(section, key)})")
            lines.append(f"      {info.description}")
    lines.append("  --model.FIELD=VALUE  any model config field of the chosen model (e.g. --model.hidden_size=128)")
    return "\n".join(lines)


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
