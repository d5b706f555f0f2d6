"""Byte-level BPE trained with the `tokenizers` library (GPT-2 style pre-tokenization, no unknown tokens).

Ids 0 and 1 are the specials "<|bos|>" and "<|eos|>", then the 256 byte symbols, then the learned merges.
Because the base alphabet is all 256 bytes, any text round-trips exactly, non-ASCII included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

from .errors import DataError
from .tokenizer import Tokenizer

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
DEFAULT_BPE_VOCAB = 4096
BACKEND_FILE = "tokenizer.json"


def backend_config(backend: Backend) -> dict[str, Any]:
    """The serialized `tokenizers` pipeline without the run-time truncation/padding settings."""
    config = json.loads(backend.to_str())
    config.pop("truncation", None)
    config.pop("padding", None)
    return config


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, backend: Backend, bos_token: str = BOS_TOKEN, eos_token: str = EOS_TOKEN) -> None:
        found = {token: backend.token_to_id(token) for token in (bos_token, eos_token)}
        ids = {token: i for token, i in found.items() if i is not None}
        missing = [token for token in found if token not in ids]
        if missing:
            raise DataError(f"BPE tokenizer has no special token(s) {missing}; pass bos_token=/eos_token= that exist")
        self.backend = backend
        # Text that happens to spell "<|eos|>" stays ordinary text: only prepare() inserts special ids.
        self.backend.encode_special_tokens = True
        self.bos_token, self.eos_token = bos_token, eos_token
        self._bos_id, self._eos_id = ids[bos_token], ids[eos_token]

    @classmethod
    def from_file(cls, path: str | Path, bos_token: str = BOS_TOKEN, eos_token: str = EOS_TOKEN) -> BPETokenizer:
        """Load a `tokenizers` tokenizer.json file."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"tokenizer file {str(path)!r} does not exist")
        try:
            backend = Backend.from_file(str(path))
        except Exception as err:
            raise DataError(f"{str(path)!r} is not a `tokenizers` tokenizer.json: {err}") from err
        return cls(backend, bos_token, eos_token)

    @property
    def name(self) -> str:
        return f"bpe-{self.vocab_size}"

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int:
        return self._bos_id

    @property
    def eos_id(self) -> int:
        return self._eos_id

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [enc.ids for enc in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "backend": backend_config(self.backend),
        }

    def _save_files(self, directory: Path) -> dict[str, Any]:
        self.backend.save(str(directory / BACKEND_FILE))
        return {"bos_token": self.bos_token, "eos_token": self.eos_token}

    @classmethod
    def _load(cls, directory: Path, meta: dict[str, Any]) -> BPETokenizer:
        return cls.from_file(directory / BACKEND_FILE, meta["bos_token"], meta["eos_token"])


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_BPE_VOCAB) -> BPETokenizer:
    """Train a byte-level BPE of `vocab_size` ids (specials included) on `texts`; deterministic for equal input.

    The result has fewer ids than asked when the texts offer too few merges.
    """
    if vocab_size < 258:
        raise DataError(f"BPE vocab_size must be at least 258 (2 specials + 256 bytes), got {vocab_size}")
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return BPETokenizer(backend)
