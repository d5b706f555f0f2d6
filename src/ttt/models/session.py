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
from typing import TYPE_CHECKING, cast

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

if TYPE_CHECKING:
    from .cache import TTTCache
    from .modeling import TTTModel

FORMAT = "ttt-session/1"
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "architectures")


def _base(model: nn.Module) -> TTTModel:
    # the TTTModel inside a TTTForCausalLM: caches belong to it, whichever of the two built them
    return cast("TTTModel", getattr(model, "model", model))


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
    cache: TTTCache,
    path: str | os.PathLike,
    model: nn.Module,
    input_ids: Tensor | None = None,
    rng_state: Tensor | None = None,
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


def load_session(path: str | os.PathLike, model: nn.Module) -> tuple[TTTCache, Tensor | None, Tensor | None]:
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
        mini_batch = _base(model).config.mini_batch_size
        if bool(((offset < 0) | (offset >= mini_batch)).any()):
            raise ValueError(f"{path} is corrupted: layer {i} has mini-batch offsets outside [0, {mini_batch})")
        layer.num_positions = positions[i]
    rng = None
    if "rng_state" in meta:
        rng = torch.frombuffer(bytearray(base64.b64decode(meta["rng_state"])), dtype=torch.uint8).clone()
    return cache, tensors.get("input_ids"), rng
