"""Session bytes: a `RowState` in the session file format of `ttt.models.session` (`encode_session` /
`decode_session`: safetensors, the model's config and weights fingerprints, a checksum of every tensor), so a stored
session is also a file `TTTCache.load` reads.

The fingerprints are computed once per model here (the weights fingerprint hashes every weight, too slow to repeat
at every request)."""

from __future__ import annotations

import torch
from torch import nn

from ..models.session import config_fingerprint, decode_session, encode_session, weights_fingerprint
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
        positions = [row.tokens] * len(row.layers)
        return encode_session(row.layers, positions, 1, self.config_fingerprint, self.weights_fingerprint)

    def decode(self, data: bytes, device: torch.device | None = None) -> RowState:
        """The `RowState` in session bytes. Raises SessionCorrupt when they are damaged or from another model."""
        try:
            contents = decode_session(
                data, self.config_fingerprint, self.weights_fingerprint, len(self.fresh.layers), self.mini_batch_size
            )
        except ValueError as err:
            raise SessionCorrupt(f"it {err}") from None
        if contents.batch_size != 1:
            raise SessionCorrupt(f"it holds {contents.batch_size} sequences (a server session holds one)")
        layers: list[dict[str, torch.Tensor]] = []
        for i, (named, fresh) in enumerate(zip(contents.layers, self.fresh.layers)):
            if set(named) != set(fresh) or any(
                named[n].shape != t.shape or named[n].dtype != t.dtype for n, t in fresh.items()
            ):
                raise SessionCorrupt(f"its layer {i} does not fit this model")
            layers.append({n: t.to(device) for n, t in named.items()})
        return RowState(layers, contents.num_positions[0])
