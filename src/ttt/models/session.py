"""Sessions: save a TTTCache (the whole context, in a fixed-size state) to a file and restore it later, in any
process, to continue generating exactly where it stopped.

File: safetensors with the state tensors (per layer: inner weights, gradient sums, offsets, conv states), optionally
the token ids so far and the sampler's RNG state, and a header recording the format, a fingerprint of the model's
config and of its weights, the position, and a checksum of every tensor saved — so a file from another model, or a
damaged one, is refused with a clear message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

FORMAT = "ttt-session/1"
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "architectures")


def _base(model: nn.Module) -> nn.Module:
    # the TTTModel inside a TTTForCausalLM: caches belong to it, whichever of the two built them
    return getattr(model, "model", model)


def config_fingerprint(model: nn.Module) -> str:
    model = _base(model)
    config = {k: v for k, v in model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def weights_fingerprint(model: nn.Module) -> str:
    model = _base(model)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tensors_checksum(tensors: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_session(
    cache, path: str | os.PathLike, model: nn.Module, input_ids: Tensor | None = None, rng_state: Tensor | None = None
) -> Path:
    """Write `cache` (built for `model`) and, optionally, the token ids so far and a torch RNG state."""
    tensors: dict[str, Tensor] = {}
    for i, layer in enumerate(cache.layers):
        for name, t in layer.named_tensors().items():
            tensors[f"layers.{i}.{name}"] = t.detach().cpu().contiguous()
    if input_ids is not None:
        tensors["input_ids"] = input_ids.detach().cpu().long().contiguous()
    meta = {
        "format": FORMAT,
        "config_fingerprint": config_fingerprint(model),
        "weights_fingerprint": weights_fingerprint(model),
        "num_positions": json.dumps([layer.num_positions for layer in cache.layers]),
        "batch_size": str(cache.batch_size),
        "checksum": tensors_checksum(tensors),
    }
    if rng_state is not None:
        meta["rng_state"] = base64.b64encode(rng_state.numpy().tobytes()).decode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, tmp, metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
    return path


def load_session(path: str | os.PathLike, model: nn.Module):
    """(cache, input_ids or None, rng_state or None) from a session file, checked against `model`."""
    from .cache import TTTCache

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no session file at {path}")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as err:
        raise ValueError(f"{path} is not a readable session file ({err})") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ttt session file (format {meta.get('format')!r}, expected {FORMAT!r})")
    if tensors_checksum(tensors) != meta.get("checksum"):
        raise ValueError(f"{path} is corrupted: its tensors do not match the checksum in its header")
    if meta["config_fingerprint"] != config_fingerprint(model):
        raise ValueError(f"{path} was saved from a model with another config: load it into that model")
    if meta["weights_fingerprint"] != weights_fingerprint(model):
        raise ValueError(f"{path} was saved from a model with other weights (same config): load it into that model")
    param = next(model.parameters())
    cache = TTTCache.from_model(model, int(meta["batch_size"]), param.dtype, param.device)
    positions = json.loads(meta["num_positions"])
    for i, layer in enumerate(cache.layers):
        prefix = f"layers.{i}."
        named = {name[len(prefix) :]: t.to(param.device) for name, t in tensors.items() if name.startswith(prefix)}
        try:
            layer.load_named(named)
        except ValueError as err:
            raise ValueError(f"{path} does not fit this model (layer {i}): {err}") from None
        offset = layer.ttt.offset
        mini_batch = model.config.mini_batch_size
        if bool(((offset < 0) | (offset >= mini_batch)).any()):
            raise ValueError(f"{path} is corrupted: layer {i} has mini-batch offsets outside [0, {mini_batch})")
        layer.num_positions = positions[i]
    rng = None
    if "rng_state" in meta:
        rng = torch.frombuffer(bytearray(base64.b64decode(meta["rng_state"])), dtype=torch.uint8).clone()
    return cache, tensors.get("input_ids"), rng


def state_bytes(config, batch_size: int = 1, bytes_per_value: int = 4) -> int:
    """Bytes of a TTTCache for `config` (the formula `TTTCache.nbytes` measures): per layer and head the inner
    weights and their gradient sums (TTT-Linear: 2 (d² + d); TTT-MLP: 2 (8d² + 5d)), plus the conv states and the
    int64 offsets. Constant in the context length."""
    from ..ops.inner_optim import BUFFERS

    heads, d = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    bias = getattr(config, "inner_bias", True)
    inner = d * d + d * bias if config.ttt_layer_type == "linear" else 8 * d * d + 5 * d * bias
    # weights, gradient sums and the inner optimizer's buffers (momentum: 1, adam: 2)
    copies = 2 + len(BUFFERS[getattr(config, "inner_optimizer", "gd")])
    convs = (1 if config.pre_conv else 0) + (2 if config.share_qk else 0)
    values = copies * heads * inner + convs * config.hidden_size * (config.conv_kernel - 1)
    if getattr(config, "forget_gate", False) or getattr(config, "inner_weight_decay", 0.0):
        values += heads  # the retention accumulated in the current mini-batch
    extra_ints = 1 if getattr(config, "inner_optimizer", "gd") == "adam" else 0  # closed mini-batches
    per_layer = values * bytes_per_value + 8 * (1 + extra_ints)
    return batch_size * per_layer * config.num_hidden_layers


def kv_cache_bytes(
    num_layers: int, hidden_size: int, seq_len: int, batch_size: int = 1, bytes_per_value: int = 4
) -> int:
    """Bytes of a Transformer's KV cache (full multi-head attention) after `seq_len` tokens."""
    return 2 * num_layers * seq_len * hidden_size * batch_size * bytes_per_value
