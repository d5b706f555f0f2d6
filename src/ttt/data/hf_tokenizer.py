"""Any Hugging Face tokenizer that loads from local files (transformers AutoTokenizer, never downloading)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .bpe import backend_config
from .errors import DataError
from .tokenizer import Tokenizer

HF_FOLDER = "hf"


class HFTokenizer(Tokenizer):
    kind = "hf"

    def __init__(self, hf_tokenizer: Any, source: str) -> None:
        bos, eos = hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id
        # Tokenizers with a single document separator (GPT-2's <|endoftext|>) frame documents with it twice.
        bos, eos = (bos if bos is not None else eos), (eos if eos is not None else bos)
        if bos is None:
            raise DataError(f"Hugging Face tokenizer {source!r} defines neither a BOS nor an EOS token")
        self.hf = hf_tokenizer
        self.source = source
        self._bos_id, self._eos_id = int(bos), int(eos)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> HFTokenizer:
        """AutoTokenizer.from_pretrained(name_or_path, local_files_only=True), with errors that say so."""
        from transformers import AutoTokenizer

        try:
            hf_tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=True)
        except Exception as err:
            raise DataError(
                f"could not load a Hugging Face tokenizer from {str(name_or_path)!r} using local files only "
                f"(ttt never downloads): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            ) from err
        return cls(hf_tokenizer, str(name_or_path))

    @property
    def name(self) -> str:
        return f"hf:{self.source}"

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def bos_id(self) -> int:
        return self._bos_id

    @property
    def eos_id(self) -> int:
        return self._eos_id

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.hf(texts, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def config(self) -> dict[str, Any]:
        backend = getattr(self.hf, "backend_tokenizer", None)
        mapping = backend_config(backend) if backend is not None else sorted(self.hf.get_vocab().items())
        return {"kind": self.kind, "bos_id": self.bos_id, "eos_id": self.eos_id, "mapping": mapping}

    def _save_files(self, directory: Path) -> dict[str, Any]:
        target = directory / HF_FOLDER
        if target.exists():
            shutil.rmtree(target)
        self.hf.save_pretrained(str(target))
        return {"source": self.source, "folder": HF_FOLDER}

    @classmethod
    def _load(cls, directory: Path, meta: dict[str, Any]) -> HFTokenizer:
        loaded = cls.from_pretrained(directory / meta["folder"])
        loaded.source = meta["source"]
        return loaded
