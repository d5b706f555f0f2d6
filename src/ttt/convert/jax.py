"""Convert an official ttt-lm-jax (EasyLM streaming) checkpoint into a `save_pretrained` folder of ours.

    from_jax(ckpt_dir, out_dir, dtype=torch.float32) -> TTTConfig

Config: from the checkpoint's metadata.pkl (read with the safe unpickler) when present, else from the caller's
values (`preset`, `block`, ...). Parameters: the flax tree is mapped to our names in `PARAM_MAP` (the one place the
mapping lives), shapes checked against the config before anything is written, written atomically.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from ..atomic import atomic_dir, check_target
from ..models import BASE_LR, JAX_BLOCK_ALIASES, SIZES, TTTConfig
from .safe_pickle import safe_load
from .streaming import CheckpointFormatError, iter_records

STREAMING_FILES = ("streaming_params", "streaming_train_state")
TRAIN_STATE_PREFIX = ("params", "params")


def _t(x: Tensor) -> Tensor:
    return x.t().contiguous()


def _conv(x: Tensor) -> Tensor:
    # flax Conv kernel (width, in/groups, out) -> torch depthwise Conv1d weight (out, in/groups, width)
    return x.permute(2, 1, 0).contiguous()


def _lr_kernel(x: Tensor) -> Tensor:
    # per-head Dense(D -> 1) kernel (H, D, 1) -> our (H, 1, D)
    return x.transpose(1, 2).contiguous()


def _same(x: Tensor) -> Tensor:
    return x


# flax path (joined with "|", since names contain "/") -> (our name, transform); {L} is the layer index
PARAM_MAP: list[tuple[str, str, Callable[[Tensor], Tensor]]] = [
    (r"model\|wte\|embedding", "model.embed_tokens.weight", _same),
    (r"model\|ln_f\|kernel", "model.norm.weight", _same),
    (r"lm_head\|kernel", "lm_head.weight", _t),
    (r"model\|h\|(\d+)\|conv\|conv_norm\|kernel", "model.layers.{L}.conv.norm.weight", _same),
    (r"model\|h\|(\d+)\|conv\|conv1\|kernel", "model.layers.{L}.conv.conv.weight", _conv),
    (r"model\|h\|(\d+)\|conv\|conv1\|bias", "model.layers.{L}.conv.conv.bias", _same),
    (r"model\|h\|(\d+)\|seq_norm\|kernel", "model.layers.{L}.seq_norm.weight", _same),
    (r"model\|h\|(\d+)\|ffn_norm\|kernel", "model.layers.{L}.ffn_norm.weight", _same),
    (r"model\|h\|(\d+)\|feed_forward\|w1\|kernel", "model.layers.{L}.mlp.gate_proj.weight", _t),
    (r"model\|h\|(\d+)\|feed_forward\|w3\|kernel", "model.layers.{L}.mlp.up_proj.weight", _t),
    (r"model\|h\|(\d+)\|feed_forward\|w2\|kernel", "model.layers.{L}.mlp.down_proj.weight", _t),
    (
        r"model\|h\|(\d+)\|seq_modeling_block\|w([qkvog])\|kernel",
        "model.layers.{L}.seq_modeling_block.{P}_proj.weight",
        _t,
    ),
    (
        r"model\|h\|(\d+)\|seq_modeling_block\|conv_([qk])\|kernel",
        "model.layers.{L}.seq_modeling_block.conv_{P}.weight",
        _conv,
    ),
    (
        r"model\|h\|(\d+)\|seq_modeling_block\|conv_([qk])\|bias",
        "model.layers.{L}.seq_modeling_block.conv_{P}.bias",
        _same,
    ),
    (r"model\|h\|(\d+)\|seq_modeling_block\|ttt_dense_([01])", "model.layers.{L}.seq_modeling_block.W{P+1}", _same),
    (r"model\|h\|(\d+)\|seq_modeling_block\|ttt_bias_([01])", "model.layers.{L}.seq_modeling_block.b{P+1}", _same),
    (
        r"model\|h\|(\d+)\|seq_modeling_block\|ttt_norm/scale",
        "model.layers.{L}.seq_modeling_block.ttt_norm_weight",
        _same,
    ),
    (r"model\|h\|(\d+)\|seq_modeling_block\|ttt_norm/bias", "model.layers.{L}.seq_modeling_block.ttt_norm_bias", _same),
    (
        r"model\|h\|(\d+)\|seq_modeling_block\|learnable_ttt_lr/kernel",
        "model.layers.{L}.seq_modeling_block.learnable_ttt_lr_weight",
        _lr_kernel,
    ),
    (
        r"model\|h\|(\d+)\|seq_modeling_block\|learnable_ttt_lr/bias",
        "model.layers.{L}.seq_modeling_block.learnable_ttt_lr_bias",
        _same,
    ),
    (
        r"model\|h\|(\d+)\|seq_modeling_block\|learnable_token_idx",
        "model.layers.{L}.seq_modeling_block.learnable_token_idx",
        _same,
    ),
    (
        r"model\|h\|(\d+)\|seq_modeling_block\|post_norm\|scale",
        "model.layers.{L}.seq_modeling_block.post_norm.weight",
        _same,
    ),
    (
        r"model\|h\|(\d+)\|seq_modeling_block\|post_norm\|bias",
        "model.layers.{L}.seq_modeling_block.post_norm.bias",
        _same,
    ),
]
_COMPILED = [(re.compile(pattern + "$"), name, fn) for pattern, name, fn in PARAM_MAP]


def map_param(path: tuple[str, ...]) -> tuple[str, Callable[[Tensor], Tensor]] | None:
    """Our parameter name and the transform for a flax path inside params, or None if it is not a model leaf."""
    joined = "|".join(path)
    for pattern, template, fn in _COMPILED:
        match = pattern.match(joined)
        if match:
            groups = match.groups()
            name = template.replace("{L}", groups[0]) if groups else template
            if len(groups) > 1:
                part = groups[1]
                name = name.replace("{P+1}", str(int(part) + 1)) if "{P+1}" in name else name.replace("{P}", part)
            return name, fn
    return None


REQUIRED_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def config_from_jax(model_config: dict) -> TTTConfig:
    """The JAX ModelConfig dict (metadata.pkl's model_config) -> TTTConfig.

    Raises ValueError for an unknown seq_modeling_block or a model_config without the model's sizes.
    """
    missing = [key for key in REQUIRED_KEYS if key not in model_config]
    if missing:
        raise ValueError(f"model_config lacks {', '.join(missing)}: not a ttt-lm-jax ModelConfig")
    block = model_config.get("seq_modeling_block", "ttt_linear")
    if block not in JAX_BLOCK_ALIASES:
        raise ValueError(f"unknown seq_modeling_block {block!r}; known: {', '.join(JAX_BLOCK_ALIASES)}")
    layer_type, backbone = JAX_BLOCK_ALIASES[block]
    mamba = backbone == "mamba"
    fields = dict(
        vocab_size=model_config["vocab_size"],
        hidden_size=model_config["hidden_size"],
        intermediate_size=model_config["intermediate_size"],
        num_hidden_layers=model_config["num_hidden_layers"],
        num_attention_heads=model_config["num_attention_heads"],
        max_position_embeddings=model_config.get("max_sequence_length", 2048),
        rms_norm_eps=model_config.get("rms_norm_eps", 1e-6),
        initializer_range=model_config.get("initializer_range", 0.02),
        tie_word_embeddings=model_config.get("tie_word_embeddings", True),
        bos_token_id=model_config.get("bos_token_id", 1),
        eos_token_id=model_config.get("eos_token_id", 2),
        pad_token_id=model_config.get("pad_token_id"),
        ttt_layer_type=layer_type,
        share_qk=mamba,
        use_gate=mamba,
        pre_conv=model_config.get("pre_conv", False),
        conv_kernel=model_config.get("conv_width", 4),
        mini_batch_size=model_config.get("mini_batch_size", 16),
        ttt_base_lr=model_config.get("ttt_base_lr", BASE_LR[layer_type]),
        rope_theta=model_config.get("rope_theta", 10000.0),
        remat_mini_batch_group_size=model_config.get("remat_mini_batch_group_size", 0),
    )
    return TTTConfig(**fields)


def config_from_flags(
    preset: str,
    block: str,
    vocab_size: int = 32000,
    pre_conv: bool | None = None,
    tie_word_embeddings: bool = True,
    **overrides,
) -> TTTConfig:
    """Config when the checkpoint has no metadata: a size (125m, 350m, 760m, 1.3b) and a JAX block name."""
    size = {"1b": "1.3b"}.get(preset, preset)
    if size not in SIZES:
        raise ValueError(f"unknown preset {preset!r}; sizes: {', '.join(s for s in SIZES if s != 'tiny')}")
    if block not in JAX_BLOCK_ALIASES:
        raise ValueError(f"unknown block {block!r}; known: {', '.join(JAX_BLOCK_ALIASES)}")
    # the released Mamba-backbone models have the pre-conv block, the *_base (Transformer) ones do not
    conv = pre_conv if pre_conv is not None else JAX_BLOCK_ALIASES[block][1] == "mamba"
    model_config = dict(
        SIZES[size],
        seq_modeling_block=block,
        vocab_size=vocab_size,
        pre_conv=conv,
        tie_word_embeddings=tie_word_embeddings,
        **overrides,
    )
    return config_from_jax(model_config)


def find_checkpoint(ckpt: str | os.PathLike) -> Path:
    """A streaming file, or a folder holding one (params preferred over a full train state).

    Raises FileNotFoundError naming `ckpt` when it does not exist or is a folder without a streaming file.
    """
    path = Path(ckpt)
    if path.is_file():
        return path
    if path.is_dir():
        for name in STREAMING_FILES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"{path} holds no {' or '.join(STREAMING_FILES)} file: expected an EasyLM (ttt-lm-jax) checkpoint folder"
        )
    raise FileNotFoundError(f"no checkpoint at {path}: expected an EasyLM (ttt-lm-jax) checkpoint folder")


def read_metadata(ckpt_file: Path) -> dict | None:
    """metadata.pkl next to the checkpoint, as plain data (None when absent).

    Raises ValueError naming the file when it does not unpickle to a dict (not EasyLM checkpoint metadata).
    """
    meta = ckpt_file.parent / "metadata.pkl"
    if not meta.is_file():
        return None
    try:
        data = safe_load(meta.read_bytes())
    except Exception as err:  # a foreign or corrupted pickle fails in many ways (UnpicklingError, EOFError, ...)
        raise ValueError(
            f"{meta} is not an EasyLM/flax checkpoint metadata file (it does not unpickle: {type(err).__name__}: "
            f"{err}); replace it with the checkpoint's own metadata.pkl, or remove it and give the config "
            "(CLI: --preset SIZE --block BLOCK)"
        ) from err
    if not isinstance(data, dict):
        raise ValueError(
            f"{meta} is not an EasyLM/flax checkpoint metadata file: it holds a {type(data).__name__}, not a dict"
        )
    return data


def config_from_metadata(ckpt: Path, ckpt_file: Path) -> TTTConfig:
    """The config recorded in the metadata.pkl beside `ckpt_file` (`ckpt`: the path the caller gave).

    Raises ValueError naming the path when there is no metadata.pkl or it holds no usable model_config.
    """
    meta = read_metadata(ckpt_file)
    meta_path = ckpt_file.parent / "metadata.pkl"
    if meta is None:
        if ckpt.is_file():
            raise ValueError(
                f"{ckpt} is a file with no metadata.pkl beside it: expected an EasyLM (ttt-lm-jax) checkpoint folder "
                f"holding {' or '.join(STREAMING_FILES)} and metadata.pkl; or, for a bare streaming file, give the "
                "config (CLI: --preset SIZE --block BLOCK)"
            )
        raise ValueError(f"{ckpt} has no metadata.pkl: give the config (CLI: --preset SIZE --block BLOCK)")
    if not isinstance(meta.get("model_config"), dict):
        raise ValueError(
            f"{meta_path} has no model_config: not the metadata of an EasyLM (ttt-lm-jax) checkpoint; give the "
            "config (CLI: --preset SIZE --block BLOCK)"
        )
    try:
        return config_from_jax(meta["model_config"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"{meta_path}: {err}") from err


def read_params(ckpt_file: Path, config: TTTConfig, dtype: torch.dtype) -> dict[str, Tensor]:
    """Stream the model parameters out of a params or train-state file, mapped to our names and checked against
    `config` (the first missing, unknown or mis-shaped parameter is named)."""
    from ..models import TTTForCausalLM

    with torch.device("meta"):
        expected = {k: v.shape for k, v in TTTForCausalLM(config).state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)

    state: dict[str, Tensor] = {}
    prefix: tuple[str, ...] | None = None

    def want(key: tuple[str, ...]) -> bool:
        nonlocal prefix
        if prefix is None:
            prefix = TRAIN_STATE_PREFIX if key[:2] == TRAIN_STATE_PREFIX or key[0] in ("step", "opt_state") else ()
        return key[: len(prefix)] == prefix

    for key, tensor in iter_records(ckpt_file, want):
        assert prefix is not None  # want() sets it before the first record
        path = key[len(prefix) :]
        mapped = map_param(path)
        if mapped is None:
            raise ValueError(f"{ckpt_file}: parameter {'/'.join(path)} has no counterpart in our model")
        name, fn = mapped
        if name not in expected:
            raise ValueError(
                f"{ckpt_file}: parameter {'/'.join(path)} (-> {name}) does not fit the config "
                f"({config.ttt_layer_type}, pre_conv={config.pre_conv}, share_qk={config.share_qk}, "
                f"tie_word_embeddings={config.tie_word_embeddings}, {config.num_hidden_layers} layers)"
            )
        value = fn(tensor).to(dtype)
        if value.shape != expected[name]:
            raise ValueError(
                f"{ckpt_file}: parameter {'/'.join(path)} -> {name}: checkpoint shape {tuple(value.shape)}, "
                f"config shape {tuple(expected[name])}"
            )
        state[name] = value
    missing = [name for name in expected if name not in state]
    if missing:
        raise ValueError(
            f"{ckpt_file}: the checkpoint lacks {missing[0]} (and {len(missing) - 1} more) for this config"
        )
    return state


def from_jax(
    ckpt: str | os.PathLike,
    out_dir: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    config: TTTConfig | None = None,
    overwrite: bool = False,
) -> TTTConfig:
    """Convert `ckpt` (a folder with streaming_params / streaming_train_state, or the file) into `out_dir`, a
    folder that `TTTForCausalLM.from_pretrained` loads (safetensors + config.json recording `dtype`).

    The config comes from `config` if given, else from the checkpoint's metadata.pkl. Nothing is left in `out_dir`
    unless the whole conversion succeeds.

    Raises FileNotFoundError when there is no checkpoint at `ckpt`, FileExistsError for an `out_dir` in use
    (without `overwrite`), CheckpointFormatError (a ValueError) naming the file for a streaming file that is not
    one or is truncated, and ValueError naming the file or folder for a missing or foreign metadata.pkl or
    parameters that do not fit the config.
    """
    ckpt_file = find_checkpoint(ckpt)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists as a file: give a folder to write the converted model to")
    check_target(out, overwrite)
    if config is None:
        config = config_from_metadata(Path(ckpt), ckpt_file)
    state = read_params(ckpt_file, config, dtype)
    config.dtype = dtype
    config.architectures = ["TTTForCausalLM"]

    with atomic_dir(out, overwrite) as tmp:
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(tmp)
        (tmp / "conversion.json").write_text(
            json.dumps({"source": str(ckpt_file), "dtype": str(dtype).removeprefix("torch.")}, indent=2)
        )
    return config


__all__ = [
    "CheckpointFormatError",
    "PARAM_MAP",
    "config_from_flags",
    "config_from_jax",
    "config_from_metadata",
    "find_checkpoint",
    "from_jax",
    "map_param",
    "read_metadata",
    "read_params",
]
