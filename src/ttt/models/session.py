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
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from ..atomic import atomic_write

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


@dataclass
class SessionContents:
    """What session bytes hold, checked: per layer its tensors by name (`layers[i]`, each [batch_size, ...]), the
    positions read per layer, the batch size, and the optional token ids and RNG state."""

    layers: list[dict[str, Tensor]]
    num_positions: list[int]
    batch_size: int
    input_ids: Tensor | None = None
    rng_state: Tensor | None = None


def encode_session(
    layers: list[dict[str, Tensor]],
    num_positions: list[int],
    batch_size: int,
    config_fp: str,
    weights_fp: str,
    input_ids: Tensor | None = None,
    rng_state: Tensor | None = None,
) -> bytes:
    """The bytes of a session file: `layers[i]` maps layer i's tensor names to tensors, `config_fp` / `weights_fp`
    are the model's `config_fingerprint` / `weights_fingerprint` (computed once by a caller that encodes often)."""
    tensors = {
        f"layers.{i}.{name}": t.detach().cpu().contiguous()
        for i, named in enumerate(layers)
        for name, t in named.items()
    }
    if input_ids is not None:
        tensors["input_ids"] = input_ids.detach().cpu().long().contiguous()
    meta = {
        "format": FORMAT,
        "config_fingerprint": config_fp,
        "weights_fingerprint": weights_fp,
        "num_positions": json.dumps(list(num_positions)),
        "batch_size": str(batch_size),
        "checksum": tensors_checksum(tensors),
    }
    if rng_state is not None:
        meta["rng_state"] = base64.b64encode(rng_state.numpy().tobytes()).decode()
    return save_bytes(tensors, metadata=meta)


def decode_session(
    data: bytes, config_fp: str, weights_fp: str, num_layers: int, mini_batch_size: int
) -> SessionContents:
    """The checked contents of session bytes for a model with these fingerprints, `num_layers` layers and this
    mini-batch size.

    Raises ValueError whose message completes "the session ...": "is not a readable session file", "is not a ttt
    session file", "is corrupted", "was saved from a model with another config / other weights", "does not fit"."""
    try:
        (size,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
        tensors = load_bytes(data)
    except Exception as err:
        raise ValueError(f"is not a readable session file ({err})") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"is not a ttt session file (format {meta.get('format')!r}, expected {FORMAT!r})")
    if tensors_checksum(tensors) != meta.get("checksum"):
        raise ValueError("is corrupted: its tensors do not match the checksum in its header")
    if meta.get("config_fingerprint") != config_fp:
        raise ValueError("was saved from a model with another config: load it into that model")
    if meta.get("weights_fingerprint") != weights_fp:
        raise ValueError("was saved from a model with other weights (same config): load it into that model")
    try:
        positions = [int(p) for p in json.loads(meta["num_positions"])]
        batch_size = int(meta["batch_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"is corrupted: its header has no valid positions / batch size ({err})") from None
    layers: list[dict[str, Tensor]] = []
    for i in range(num_layers):
        prefix = f"layers.{i}."
        named = {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}
        offset = named.get("offset")
        if offset is not None and bool(((offset < 0) | (offset >= mini_batch_size)).any()):
            raise ValueError(f"is corrupted: layer {i} has mini-batch offsets outside [0, {mini_batch_size})")
        layers.append(named)
    known = sum(len(named) for named in layers) + ("input_ids" in tensors)
    if len(tensors) != known or len(positions) != num_layers:
        raise ValueError(f"does not fit this model: it holds tensors of layers this model ({num_layers}) lacks")
    rng = None
    if "rng_state" in meta:
        rng = torch.frombuffer(bytearray(base64.b64decode(meta["rng_state"])), dtype=torch.uint8).clone()
    return SessionContents(layers, positions, batch_size, tensors.get("input_ids"), rng)


def save_session(
    cache: TTTCache,
    path: str | os.PathLike,
    model: nn.Module,
    input_ids: Tensor | None = None,
    rng_state: Tensor | None = None,
) -> Path:
    """Write `cache` (built for `model`) and, optionally, the token ids so far and a torch RNG state."""
    data = encode_session(
        [layer.named_tensors() for layer in cache.layers],
        [layer.num_positions for layer in cache.layers],
        cache.batch_size,
        config_fingerprint(model),
        weights_fingerprint(model),
        input_ids,
        rng_state,
    )
    return atomic_write(path, data)


def load_session(path: str | os.PathLike, model: nn.Module) -> tuple[TTTCache, Tensor | None, Tensor | None]:
    """(cache, input_ids or None, rng_state or None) from a session file, checked against `model`."""
    from .cache import TTTCache

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no session file at {path}")
    param = next(model.parameters())
    base = _base(model)
    try:
        contents = decode_session(
            path.read_bytes(),
            config_fingerprint(model),
            weights_fingerprint(model),
            len(base.layers),
            base.config.mini_batch_size,
        )
    except ValueError as err:
        raise ValueError(f"{path} {err}") from None
    cache = TTTCache.from_model(model, contents.batch_size, param.dtype, param.device)
    for i, layer in enumerate(cache.layers):
        named = {name: t.to(param.device) for name, t in contents.layers[i].items()}
        try:
            layer.load_named(named)
        except ValueError as err:
            raise ValueError(f"{path} does not fit this model (layer {i}): {err}") from None
        layer.num_positions = contents.num_positions[i]
    return cache, contents.input_ids, contents.rng_state
