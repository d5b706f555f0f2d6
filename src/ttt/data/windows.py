"""Training windows over a split's token stream, and a resumable, rank-sharded batch iterator over them.

Window i is tokens[i * seq_len : i * seq_len + seq_len + 1]: seq_len + 1 tokens, so inputs = w[:-1] and
targets = w[1:]. Consecutive windows share only their boundary token, so every token after the first is a
target exactly once per epoch; windows ignore document boundaries (a window may hold the end of one document,
its EOS, the next BOS and the next document). The trailing tokens that do not fill a window are left out.

Epoch e visits the windows in the order `permutation(seed, e)` (or 0..n-1 unshuffled) and cuts it into global
batches of `batch_size` windows; rank r of world_size takes rows [r * b / w, (r + 1) * b / w) of each global
batch, so concatenating the ranks' batches gives exactly the 1-process batch. The position (windows of the
current epoch already handed out) does not depend on world_size: a checkpoint resumes on any number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError


class WindowDataset(Dataset):
    """Map-style dataset of the windows of one token array; items are int64 tensors [seq_len + 1]."""

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        if seq_len < 1:
            raise DataError(f"seq_len must be >= 1, got {seq_len}")
        if len(tokens) < seq_len + 1:
            raise DataError(f"{len(tokens)} tokens are fewer than one window of seq_len + 1 = {seq_len + 1}")
        self.tokens = tokens
        self.seq_len = seq_len

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.seq_len

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        start = index * self.seq_len
        return torch.from_numpy(self.tokens[start : start + self.seq_len + 1].astype(np.int64))

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        """Windows `indices` stacked: int64 [len(indices), seq_len + 1]."""
        positions = np.asarray(indices, dtype=np.int64)[:, None] * self.seq_len + np.arange(self.seq_len + 1)
        return torch.from_numpy(self.tokens[positions].astype(np.int64))


class WindowLoader:
    """Iterate batches of windows in a seeded order, one rank's share each, with a checkpointable position.

    `for batch in loader` yields this rank's int64 [batch_size // world_size, seq_len + 1] tensors until the
    epoch ends, then the next `for` starts the next epoch. `state_dict()` taken after any batch resumes right
    after it. With drop_last=False the last global batch is smaller (and split as evenly as possible).
    """

    def __init__(
        self,
        dataset: WindowDataset,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if batch_size < 1 or batch_size % world_size:
            raise DataError(
                f"batch_size is the global batch and must be a positive multiple of world_size={world_size}, "
                f"got {batch_size}"
            )
        if drop_last and len(dataset) < batch_size:
            raise DataError(
                f"only {len(dataset)} windows of seq_len + 1 = {dataset.seq_len + 1} tokens, fewer than one "
                f"batch of batch_size={batch_size}; use less seq_len or batch_size, or more data"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0  # windows of this epoch's order already handed out (all ranks together)

    @property
    def windows_per_epoch(self) -> int:
        """Windows an epoch uses: all of them, or whole global batches only when drop_last."""
        n = len(self.dataset)
        return n - n % self.batch_size if self.drop_last else n

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-self.windows_per_epoch // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The window indices of `epoch`, in visiting order."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def __iter__(self) -> Iterator[torch.Tensor]:
        self._roll_over()
        epoch = self.epoch
        order = self.order(epoch)
        # `order` belongs to this epoch only: stop once the loader has moved to another (a rollover elsewhere)
        while self.epoch == epoch and self.position < self.windows_per_epoch:
            start = self.position
            stop = min(start + self.batch_size, self.windows_per_epoch)
            # Advance before yielding: a state_dict() taken while this batch is in use resumes after it.
            self.position = stop
            lo = self.rank * (stop - start) // self.world_size
            hi = (self.rank + 1) * (stop - start) // self.world_size
            yield self.dataset.batch(order[start + lo : start + hi])

    def _roll_over(self) -> None:
        self.epoch, self.position = self._next_position()

    def _next_position(self) -> tuple[int, int]:
        """(epoch, position) of the next batch: the next epoch's start once this one is used up."""
        if self.position >= self.windows_per_epoch:
            return self.epoch + 1, 0
        return self.epoch, self.position

    def state_dict(self) -> dict[str, Any]:
        """The data position plus what must match on resume (seed, order, window geometry)."""
        # Computed, not rolled over in place: an iterator suspended after the epoch's last batch must see its
        # epoch end, so that the next `for` starts the next epoch's order (as a resumed loader does).
        epoch, position = self._next_position()
        return {
            "epoch": epoch,
            "position": position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "seq_len": self.dataset.seq_len,
            "num_windows": len(self.dataset),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at `state`'s position; the data and order settings must match (batch size and ranks may not)."""
        mine = self.state_dict()
        for key in ("seed", "shuffle", "seq_len", "num_windows"):
            if state[key] != mine[key]:
                raise DataError(f"cannot resume: the checkpoint has {key}={state[key]!r}, this loader {mine[key]!r}")
        if not 0 <= state["position"] <= len(self.dataset) or state["epoch"] < 0:
            raise DataError(f"cannot resume: invalid position {state['position']} / epoch {state['epoch']}")
        self.epoch = state["epoch"]
        self.position = state["position"]
