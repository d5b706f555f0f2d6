"""Turn a tokenizer spec into a `Tokenizer`, and read one back from a saved folder.

Specs: "byte"; "bpe" / "bpe:N" (trained by `prepare` on the training split, N ids, default 4096); a path to a
`tokenizers` tokenizer.json; a folder saved by `Tokenizer.save`; any other folder or name is handed to
transformers' AutoTokenizer with local files only.
"""

from __future__ import annotations

import json
from pathlib import Path

from .bpe import DEFAULT_BPE_VOCAB, BPETokenizer
from .byte import ByteTokenizer
from .errors import DataError
from .hf_tokenizer import HFTokenizer
from .tokenizer import META_FILE, Tokenizer

TokenizerSpec = str | Path | Tokenizer
_KINDS: dict[str, type[Tokenizer]] = {"byte": ByteTokenizer, "bpe": BPETokenizer, "hf": HFTokenizer}


def bpe_vocab_size(spec: TokenizerSpec) -> int | None:
    """N when `spec` asks for a BPE to be trained ("bpe" or "bpe:N"), else None."""
    if not isinstance(spec, str) or not (spec == "bpe" or spec.startswith("bpe:")):
        return None
    size = spec.partition(":")[2] or str(DEFAULT_BPE_VOCAB)
    if not size.isdigit():
        raise DataError(f"tokenizer spec {spec!r}: write 'bpe' or 'bpe:N' with N the vocabulary size, e.g. 'bpe:4096'")
    return int(size)


def get_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """The tokenizer `spec` names (see the module docstring). "bpe[:N]" needs training data: use `prepare`."""
    if isinstance(spec, Tokenizer):
        return spec
    if bpe_vocab_size(spec) is not None:
        raise DataError(f"tokenizer {spec!r} must be trained first: prepare(..., tokenizer={spec!r}) or train_bpe()")
    if spec == "byte":
        return ByteTokenizer()
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".json":
        return BPETokenizer.from_file(path)
    if (path / META_FILE).is_file():
        return load_tokenizer(path)
    if not path.exists() and (str(spec).startswith((".", "/", "~")) or path.suffix):
        raise DataError(f"tokenizer path {str(spec)!r} does not exist")
    return HFTokenizer.from_pretrained(path if path.exists() else str(spec))


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Read a tokenizer written by `Tokenizer.save`."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise DataError(f"{str(directory)!r} holds no saved tokenizer ({META_FILE} is missing)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    kind = meta.get("kind")
    if kind not in _KINDS:
        raise DataError(f"{str(meta_path)!r} names tokenizer kind {kind!r}; known kinds: {sorted(_KINDS)}")
    return _KINDS[kind]._load(directory, meta)
