"""Tokenize a source once into one memory-mapped token file per split, described by `manifest.json`.

Token layout: every document becomes [BOS] + tokens + [EOS]; a split's documents are concatenated in source
order with nothing between them, stored as little-endian uint16 when vocab_size <= 65536, else uint32.

Folder:
    manifest.json           what was prepared (source, split rule, tokenizer, per-split counts and sha256)
    tokenizer/              the tokenizer, saved (`load_tokenizer` reads it)
    {split}.bin             the tokens of "train" and "val"
    {split}.docs.jsonl      one line per document: {"id", "offset", "tokens"} (offset of its BOS; BOS/EOS counted)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .bpe import train_bpe
from .documents import Document, describe_source, read_documents, source_fingerprint
from .errors import DataError
from .prepared import MANIFEST_FILE, TOKENIZER_FOLDER, PreparedData, load_prepared, read_manifest
from .registry import TokenizerSpec, bpe_vocab_size, get_tokenizer
from .split import split_documents
from .tokenizer import Tokenizer

FORMAT = "ttt-tokens/1"
LAYOUT = "each document is [BOS] + tokens + [EOS]; documents concatenated in source order, no padding"
SPLIT_RULE = (
    "val = first round(val_fraction * n), clipped to [1, n - 1], documents ranked by sha256(f'{seed}:{id}'); "
    "a single document: its last round(val_fraction * characters) characters, as ID#val (the rest ID#train)"
)
# Documents encoded per tokenizer call: large enough for the BPE backend's parallel batch encoding.
_ENCODE_BATCH = 64


def prepare(
    source: str | Path,
    out_dir: str | Path,
    tokenizer: TokenizerSpec = "byte",
    *,
    text_field: str = "text",
    val_fraction: float = 0.1,
    seed: int = 0,
    seq_len: int | None = None,
    overwrite: bool = False,
) -> PreparedData:
    """Read `source`, split it by document, tokenize each split into `out_dir`; return the prepared data.

    source: "bundled", a folder of .txt files, a .jsonl file (text under `text_field`) or "hf:NAME[:CONFIG]".
    tokenizer: a spec for `get_tokenizer`, or "bpe[:N]" to train a byte-level BPE on the training split.
    val_fraction: the share of documents held out as "val" (of characters, for a source of one document; see
    `split_documents`); 0 for no validation split.
    seq_len: when given, fail now unless every split holds at least one window of seq_len + 1 tokens.
    An `out_dir` prepared earlier from the same source, split and tokenizer is reused after verifying its
    checksums; one prepared differently raises `DataError` unless `overwrite=True`.

    Raises `DataError` naming the problem (a missing or empty source, a bad val_fraction or seq_len, an
    `out_dir` that is a file or an unrelated folder, a split shorter than seq_len + 1 tokens). The inputs are
    checked before `out_dir` is created, and a folder `prepare` created is removed again when it fails.
    """
    out_dir = Path(out_dir).expanduser()
    if seq_len is not None and seq_len < 1:
        raise DataError(f"seq_len must be >= 1, got {seq_len}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    docs = read_documents(source, text_field)
    splits = split_documents(docs, val_fraction, seed)
    request: dict[str, Any] = {
        "source": {"spec": describe_source(source), "text_field": text_field, "sha256": source_fingerprint(docs)},
        "split": {"val_fraction": val_fraction, "seed": seed},
    }
    existing = _read_existing(out_dir, overwrite)
    if existing is not None:
        differences = _differences(existing, request, tokenizer)
        if not differences:
            data = load_prepared(out_dir, None if bpe_vocab_size(tokenizer) else tokenizer)
            _check_seq_len(data.manifest, seq_len)
            return data
        if not overwrite:
            raise DataError(
                f"{str(out_dir)!r} was prepared differently ({'; '.join(differences)}); "
                "choose another out_dir or pass overwrite=True"
            )

    vocab = bpe_vocab_size(tokenizer)
    tok = train_bpe((doc.text for doc in splits["train"]), vocab) if vocab else get_tokenizer(tokenizer)
    dtype = np.dtype("<u2") if tok.vocab_size <= 2**16 else np.dtype("<u4")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "layout": LAYOUT,
        "dtype": dtype.name,
        "source": {**request["source"], "documents": len(docs)},
        "split": {**request["split"], "rule": SPLIT_RULE},
        "tokenizer": {
            "spec": None if isinstance(tokenizer, Tokenizer) else str(tokenizer),
            **tok.describe(),
            "folder": TOKENIZER_FOLDER,
        },
        "splits": {},
    }
    created = _first_missing(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        _write_prepared(out_dir, splits, tok, dtype, manifest, seq_len)
    except BaseException:
        if created is not None:  # everything below it is ours: never leave an empty or half-written folder
            shutil.rmtree(created, ignore_errors=True)
        raise
    return PreparedData(out_dir, manifest, tok)


def _write_prepared(
    out_dir: Path,
    splits: dict[str, list[Document]],
    tok: Tokenizer,
    dtype: np.dtype,
    manifest: dict[str, Any],
    seq_len: int | None,
) -> None:
    """Write the token files, the tokenizer and (last) the manifest into the existing folder `out_dir`."""
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    written: list[Path] = []
    try:
        for split, split_docs in splits.items():
            manifest["splits"][split] = _write_split(out_dir, split, split_docs, tok, dtype, written)
        _check_seq_len(manifest, seq_len)
        for tmp in written:
            tmp.replace(tmp.with_suffix(""))
    finally:
        for tmp in written:
            tmp.unlink(missing_ok=True)
    if (out_dir / TOKENIZER_FOLDER).exists():
        shutil.rmtree(out_dir / TOKENIZER_FOLDER)
    tok.save(out_dir / TOKENIZER_FOLDER)
    # The manifest goes last, written whole then renamed: a folder without one is never mistaken for finished data.
    manifest_tmp = out_dir / f"{MANIFEST_FILE}.tmp"
    manifest_tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    manifest_tmp.replace(out_dir / MANIFEST_FILE)


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of `folder` and its parents that does not exist yet (None when `folder` exists)."""
    missing = None
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing = path
    return missing


def _write_split(
    out_dir: Path, split: str, docs: list[Document], tok: Tokenizer, dtype: np.dtype, written: list[Path]
) -> dict[str, Any]:
    """Stream the split's tokens into {split}.bin (via a .tmp file) and its document index; return its entry."""
    bin_tmp = out_dir / f"{split}.bin.tmp"
    index_tmp = out_dir / f"{split}.docs.jsonl.tmp"
    written += [bin_tmp, index_tmp]
    digest = hashlib.sha256()
    offset = 0
    with bin_tmp.open("wb") as bin_file, index_tmp.open("w", encoding="utf-8") as index_file:
        for start in range(0, len(docs), _ENCODE_BATCH):
            batch = docs[start : start + _ENCODE_BATCH]
            for doc, ids in zip(batch, tok.encode_batch([doc.text for doc in batch])):
                framed = np.empty(len(ids) + 2, dtype=np.int64)
                framed[0], framed[1:-1], framed[-1] = tok.bos_id, ids, tok.eos_id
                if framed.min() < 0 or framed.max() >= tok.vocab_size:
                    raise DataError(f"tokenizer {tok.name} produced an id outside [0, {tok.vocab_size}) for {doc.id}")
                data = framed.astype(dtype).tobytes()
                bin_file.write(data)
                digest.update(data)
                index_file.write(json.dumps({"id": doc.id, "offset": offset, "tokens": len(framed)}) + "\n")
                offset += len(framed)
    return {
        "file": f"{split}.bin",
        "index": f"{split}.docs.jsonl",
        "documents": len(docs),
        "tokens": offset,
        "sha256": digest.hexdigest(),
    }


def _read_existing(out_dir: Path, overwrite: bool) -> dict[str, Any] | None:
    """The manifest already in `out_dir`, or None for a missing or empty folder."""
    manifest_path = out_dir / MANIFEST_FILE
    if manifest_path.is_file():
        return read_manifest(manifest_path)
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file, not a folder" if existing == out_dir else f"is inside {str(existing)!r}, a file"
        raise DataError(f"out_dir {str(out_dir)!r} {where}; give a folder path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(
            f"out_dir {str(out_dir)!r} is not empty and holds no {MANIFEST_FILE} (not prepared data, or an "
            "interrupted run); choose an empty folder or pass overwrite=True"
        )
    return None


def _differences(manifest: dict[str, Any], request: dict[str, Any], tokenizer: TokenizerSpec) -> list[str]:
    """Human-readable reasons why `manifest` does not answer `request` (empty when it does)."""
    found = []
    old_source, new_source = manifest["source"], request["source"]
    if old_source["spec"] != new_source["spec"]:
        found.append(f"source {old_source['spec']!r}, asked {new_source['spec']!r}")
    elif old_source["sha256"] != new_source["sha256"] or old_source["text_field"] != new_source["text_field"]:
        found.append("the source's documents changed since")
    for key in ("val_fraction", "seed"):
        if manifest["split"][key] != request["split"][key]:
            found.append(f"split {key} {manifest['split'][key]!r}, asked {request['split'][key]!r}")
    old_tok = manifest["tokenizer"]
    if bpe_vocab_size(tokenizer):
        if old_tok["spec"] != tokenizer:
            found.append(f"tokenizer {old_tok['spec'] or old_tok['name']!r}, asked {tokenizer!r}")
    else:
        tok = get_tokenizer(tokenizer)
        if tok.fingerprint != old_tok["fingerprint"]:
            found.append(f"tokenizer {old_tok['name']!r}, asked {tok.name!r} (a different vocabulary)")
    return found


def _check_seq_len(manifest: dict[str, Any], seq_len: int | None) -> None:
    if seq_len is None:
        return
    if seq_len < 1:
        raise DataError(f"seq_len must be >= 1, got {seq_len}")
    for split, entry in manifest["splits"].items():
        if entry["tokens"] < seq_len + 1:
            raise DataError(
                f"split {split!r} has {entry['tokens']} tokens, fewer than one window of seq_len + 1 = {seq_len + 1}"
            )
