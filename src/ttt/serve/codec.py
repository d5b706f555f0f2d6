"""Session bytes: a `RowState` in the session file format of `ttt.models.session` (safetensors, the model's config
and weights fingerprints, a checksum of every tensor), so a stored session is also a file `TTTCache.load` reads.

The fingerprints are computed once per model here (the weights fingerprint hashes every weight, too slow to repeat
at every request)."""

from __future__ import annotations

import json
import struct

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

from ..models.session import FORMAT, config_fingerprint, tensors_checksum, weights_fingerprint
from .slots import RowState


class SessionCorrupt(ValueError):
    """A stored session that cannot be used: damaged, or saved from another model."""


class SessionCodec:
    """Encode / decode one sequence's state for `model` (a TTTForCausalLM), checked against it on decode."""

    def __init__(self, model: nn.Module, fresh: RowState, mini_batch_size: int) -> None:
        self.config_fingerprint = config_fingerprint(model)
        self.weights_fingerprint = weights_fingerprint(model)
        self.fresh = fresh
        self.mini_batch_size = mini_batch_size

    def encode(self, row: RowState) -> bytes:
        """The session file's bytes for `row` (batch size 1, `row.tokens` positions)."""
        tensors = {
            f"layers.{i}.{name}": t.detach().cpu().contiguous()
            for i, named in enumerate(row.layers)
            for name, t in named.items()
        }
        meta = {
            "format": FORMAT,
            "config_fingerprint": self.config_fingerprint,
            "weights_fingerprint": self.weights_fingerprint,
            "num_positions": json.dumps([row.tokens] * len(row.layers)),
            "batch_size": "1",
            "checksum": tensors_checksum(tensors),
        }
        return save_bytes(tensors, metadata=meta)

    def decode(self, data: bytes, device: torch.device | None = None) -> RowState:
        """The `RowState` in session bytes. Raises SessionCorrupt when they are damaged or from another model."""
        try:
            (size,) = struct.unpack("<Q", data[:8])
            meta = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
            tensors = load_bytes(data)
        except Exception as err:
            raise SessionCorrupt(f"not a readable session ({err})") from err
        if meta.get("format") != FORMAT:
            raise SessionCorrupt(f"not a ttt session (format {meta.get('format')!r})")
        if tensors_checksum(tensors) != meta.get("checksum"):
            raise SessionCorrupt("its tensors do not match the checksum in its header")
        if (meta.get("config_fingerprint"), meta.get("weights_fingerprint")) != (
            self.config_fingerprint,
            self.weights_fingerprint,
        ):
            raise SessionCorrupt("it was saved from another model")
        layers: list[dict[str, torch.Tensor]] = []
        for i, fresh in enumerate(self.fresh.layers):
            prefix = f"layers.{i}."
            named = {n[len(prefix) :]: t.to(device) for n, t in tensors.items() if n.startswith(prefix)}
            if set(named) != set(fresh) or any(
                named[n].shape != t.shape or named[n].dtype != t.dtype for n, t in fresh.items()
            ):
                raise SessionCorrupt(f"layer {i} does not fit this model")
            offset = named["offset"]
            if bool(((offset < 0) | (offset >= self.mini_batch_size)).any()):
                raise SessionCorrupt(f"layer {i} has mini-batch offsets outside [0, {self.mini_batch_size})")
            layers.append(named)
        if len(tensors) != sum(len(named) for named in layers):
            raise SessionCorrupt("it holds tensors this model does not have")
        return RowState(layers, int(json.loads(meta["num_positions"])[0]))
