"""Open a folder written by `prepare`: check it, then serve its splits as memory-mapped tokens and windows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .registry import TokenizerSpec, get_tokenizer, load_tokenizer
from .tokenizer import Tokenizer
from .windows import WindowDataset, WindowLoader

MANIFEST_FILE = "manifest.json"
TOKENIZER_FOLDER = "tokenizer"


class PreparedData:
    """A prepared folder: `manifest`, `tokenizer`, and per split its tokens, documents and training windows."""

    def __init__(self, directory: Path, manifest: dict[str, Any], tokenizer: Tokenizer) -> None:
        self.directory = directory
        self.manifest = manifest
        self.tokenizer = tokenizer

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def _entry(self, split: str) -> dict[str, Any]:
        if split not in self.manifest["splits"]:
            raise DataError(f"no split {split!r} in {str(self.directory)!r}; splits: {self.splits}")
        return self.manifest["splits"][split]

    def tokens(self, split: str) -> np.memmap:
        """All tokens of `split`, read-only and memory-mapped: [n_tokens] of the manifest's dtype."""
        return np.memmap(self.directory / self._entry(split)["file"], dtype=self.manifest["dtype"], mode="r")

    def documents(self, split: str) -> list[dict[str, Any]]:
        """One {"id", "offset", "tokens"} per document of `split`, in token-file order."""
        index = self.directory / self._entry(split)["index"]
        return [json.loads(line) for line in index.read_text(encoding="utf-8").splitlines()]

    def windows(self, split: str, seq_len: int) -> WindowDataset:
        return WindowDataset(self.tokens(split), seq_len)

    def loader(
        self,
        split: str,
        seq_len: int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> WindowLoader:
        """Batches of `split` windows; shuffled by default for "train" only. `batch_size` is the global batch."""
        return WindowLoader(
            self.windows(split, seq_len),
            batch_size,
            seed=seed,
            shuffle=(split == "train") if shuffle is None else shuffle,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
        )

    def __repr__(self) -> str:
        splits = self.manifest["splits"].items()
        counts = ", ".join(f"{s}={e['documents']} docs/{e['tokens']} tokens" for s, e in splits)
        return f"PreparedData({str(self.directory)!r}, tokenizer={self.tokenizer.name!r}, {counts})"


def load_prepared(
    directory: str | Path, tokenizer: TokenizerSpec | None = None, *, verify: bool = True
) -> PreparedData:
    """Open a prepared folder. `verify` re-hashes every token file against the manifest (catches corruption).

    tokenizer: when given, it must be the one the folder was prepared with (same fingerprint), else `DataError`;
    when None, the tokenizer saved in the folder is used.
    """
    directory = Path(directory).expanduser()
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        what = "does not exist" if not directory.exists() else f"has no {MANIFEST_FILE}"
        raise DataError(f"prepared data folder {str(directory)!r} {what}; run ttt.data.prepare() first")
    manifest = read_manifest(manifest_path)
    expected = manifest["tokenizer"]
    saved = load_tokenizer(directory / expected["folder"])
    if saved.fingerprint != expected["fingerprint"]:
        raise DataError(f"the tokenizer saved in {str(directory)!r} does not match its manifest (modified?)")
    tok = saved
    if tokenizer is not None:
        tok = get_tokenizer(tokenizer)
        if tok.fingerprint != expected["fingerprint"] or tok.vocab_size != expected["vocab_size"]:
            raise DataError(
                f"tokenizer mismatch: {str(directory)!r} was tokenized with {expected['name']!r} "
                f"(vocab_size {expected['vocab_size']}), not {tok.name!r} (vocab_size {tok.vocab_size})"
            )
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for split, entry in manifest["splits"].items():
        path = directory / entry["file"]
        if not path.is_file():
            raise DataError(f"token file {str(path)!r} of split {split!r} is missing")
        if path.stat().st_size != entry["tokens"] * itemsize:
            raise DataError(
                f"token file {str(path)!r} has {path.stat().st_size} bytes, the manifest expects "
                f"{entry['tokens']} tokens x {itemsize} bytes (truncated or corrupted)"
            )
        if verify and file_sha256(path) != entry["sha256"]:
            raise DataError(f"token file {str(path)!r} is corrupted: its sha256 does not match the manifest")
    return PreparedData(directory, manifest, tok)


def read_manifest(path: Path) -> dict[str, Any]:
    """The parsed manifest.json at `path`, with the fields every reader relies on."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{str(path)!r} is not valid JSON ({err}): a damaged or foreign manifest") from err
    missing = [key for key in ("dtype", "tokenizer", "splits") if not isinstance(manifest, dict) or key not in manifest]
    if missing:
        raise DataError(f"{str(path)!r} lacks the field(s) {missing}: not a manifest written by ttt.data.prepare()")
    return manifest


def file_sha256(path: Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
