"""Byte-level tokenizer: the UTF-8 bytes of the text are the ids.

Ids 0..255 are the byte values, BOS = 256, EOS = 257, vocab_size = 258. Any text round-trips exactly;
`decode` replaces byte sequences that are not valid UTF-8 (e.g. a window cut inside a character) with U+FFFD.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tokenizer import Tokenizer

BYTE_BOS_ID = 256
BYTE_EOS_ID = 257


class ByteTokenizer(Tokenizer):
    kind = "byte"

    @property
    def name(self) -> str:
        return "byte"

    @property
    def vocab_size(self) -> int:
        return 258

    @property
    def bos_id(self) -> int:
        return BYTE_BOS_ID

    @property
    def eos_id(self) -> int:
        return BYTE_EOS_ID

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"byte tokenizer ids must be in [0, 258), got {bad[:5]}")
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "bos_id": BYTE_BOS_ID, "eos_id": BYTE_EOS_ID}

    def _save_files(self, directory: Path) -> dict[str, Any]:
        return {}

    @classmethod
    def _load(cls, directory: Path, meta: dict[str, Any]) -> ByteTokenizer:
        return cls()
