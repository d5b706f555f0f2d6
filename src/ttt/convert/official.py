"""The official ttt-lm-pytorch format, both directions.

In: `from_official(config_dict, state_dict)` builds our model from the official config dict and state dict (also
`ttt.from_official`). Out: `to_official(model, out_dir)` writes config.json with the official fields and
model.safetensors with the official parameter names (`ttt convert official`), so users can cross-check against the
official code.

The parameter names and shapes are the same on both sides (our modules keep the official names), so the mapping
below (OFFICIAL_FIELDS, RENAMES) is where any difference would live, for both directions; `from_official` names every
missing, unexpected or mis-shaped tensor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from ..atomic import atomic_dir
from ..models import TTTConfig, TTTForCausalLM

# Official TTTConfig fields we take as they are; anything else in the dict (generic HF keys such as
# "architectures", "torch_dtype", "transformers_version", "pretraining_tp") is ignored.
OFFICIAL_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
    "rope_theta",
    "use_gate",
    "share_qk",
    "ttt_layer_type",
    "ttt_base_lr",
    "mini_batch_size",
    "pre_conv",
    "conv_kernel",
)

# official name -> our name (identical today; kept as the single place a rename would go)
RENAMES: dict[str, str] = {}


def config_from_official(config: dict) -> TTTConfig:
    """Official `TTTConfig.to_dict()` -> our TTTConfig. Missing keys take the official defaults."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (the official TTTConfig.to_dict()), got {type(config).__name__}")
    defaults = {f.name: f.default for f in dataclasses.fields(TTTConfig) if f.name in OFFICIAL_FIELDS}
    fields = {name: config.get(name, defaults[name]) for name in OFFICIAL_FIELDS}
    if config.get("pretraining_tp", 1) != 1:
        warnings.warn("pretraining_tp is ignored: it only changes how the official code splits matmuls", stacklevel=3)
    # The official scan_checkpoint_group_size counts segments, ours mini-batches per group; remat changes memory,
    # never results, so it is left off here.
    return TTTConfig(**fields)


def map_official_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {RENAMES.get(name, name): tensor for name, tensor in state_dict.items()}


def from_official(config: dict, state_dict: dict[str, Tensor]) -> TTTForCausalLM:
    """Our TTTForCausalLM with the official weights, in the dtype of the given tensors.

    `lm_head.weight` may be absent when the embeddings are tied.
    """
    cfg = config_from_official(config)
    mapped = map_official_state_dict(state_dict)
    floats = {t.dtype for t in mapped.values() if t.is_floating_point()}
    if len(floats) > 1:
        raise ValueError(f"the state dict mixes floating dtypes {sorted(map(str, floats))}; convert it to one first")
    dtype = floats.pop() if floats else torch.float32
    # transformers' @wraps(nn.Module.to) on PreTrainedModel.to hides the bound method from mypy
    model = TTTForCausalLM(cfg).to(dtype)  # type: ignore[arg-type]
    expected = model.state_dict()
    if cfg.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
        mapped.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"the official state dict does not fit the config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
            f", unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"parameter {name}: official shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}"
            )
    model.load_state_dict(mapped, strict=False)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    return model


def to_official(model: TTTForCausalLM, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write `model` into `out_dir` in the official format: config.json (OFFICIAL_FIELDS plus the official model type)
    and model.safetensors (official parameter names; no lm_head.weight when the embeddings are tied), atomically.

    Raises FileExistsError when `out_dir` exists and is not empty, unless `overwrite`."""
    ours_to_official = {ours: official for official, ours in RENAMES.items()}
    state = {ours_to_official.get(k, k): v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    config = {name: getattr(model.config, name) for name in OFFICIAL_FIELDS}
    config.update(model_type="ttt", architectures=["TTTForCausalLM"], scan_checkpoint_group_size=0, use_cache=False)
    with atomic_dir(out_dir, overwrite) as tmp:
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
    return Path(out_dir)
