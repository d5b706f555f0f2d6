"""The tokenizer interface every data path uses: text <-> ids, plus the BOS/EOS ids that frame documents.

A tokenizer saves itself into a folder (`ttt_tokenizer.json` naming its kind, plus its own files) and is
identified by a fingerprint: sha256 of `config()`, which holds everything that decides the id mapping. Prepared
data records the fingerprint, so tokens are never read with a different tokenizer than the one that wrote them.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

META_FILE = "ttt_tokenizer.json"


class Tokenizer(ABC):
    """encode/decode ordinary text (never adding BOS/EOS) and expose the special ids."""

    kind: str  # "byte" | "bpe" | "hf": the key `load_tokenizer` dispatches on

    @property
    @abstractmethod
    def name(self) -> str:
        """Short human-readable name, e.g. "byte", "bpe-4096", "hf:/path/to/tokenizer"."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special ids included: every id is in [0, vocab_size)."""

    @property
    @abstractmethod
    def bos_id(self) -> int: ...

    @property
    @abstractmethod
    def eos_id(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of `text`, without BOS/EOS; text that spells a special token is encoded as ordinary text."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` of each text; subclasses override it when the backend batches in parallel."""
        return [self.encode(text) for text in texts]

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text of `ids`, dropping BOS/EOS."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able description that fully determines the id mapping (hashed into `fingerprint`)."""

    @abstractmethod
    def _save_files(self, directory: Path) -> dict[str, Any]:
        """Write the kind's own files into `directory`; return extra fields for `ttt_tokenizer.json`."""

    @classmethod
    @abstractmethod
    def _load(cls, directory: Path, meta: dict[str, Any]) -> Tokenizer:
        """Inverse of `_save_files`."""

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode("utf-8")).hexdigest()

    def describe(self) -> dict[str, Any]:
        """What a manifest records about this tokenizer."""
        return {
            "name": self.name,
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "fingerprint": self.fingerprint,
        }

    def save(self, directory: str | Path) -> Path:
        """Save into `directory` (created if needed); `load_tokenizer(directory)` reads it back."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self.kind, **self._save_files(directory), **self.describe()}
        (directory / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return directory

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"
