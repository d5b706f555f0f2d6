"""Checksum manifests: a folder's files with their sizes and sha256, so that a damaged file is named, not loaded.

Written into training checkpoints (`step_XXXXXXXX/checksums.json`) and Hugging Face folders (`save_pretrained`,
`RUN/final`); verified by `load_checkpoint` (and so on `--resume`, `ttt eval`, `ttt generate`) and by
`TTTForCausalLM.from_pretrained` / the Auto classes. A folder without a manifest (written before manifests existed,
or by another tool) loads as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST = "checksums.json"


class DamagedFileError(ValueError):
    """A file is missing, truncated, overwritten or unreadable; `path` names it."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path} is damaged: {reason}")


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | os.PathLike, exclude: tuple[str, ...] = ()) -> Path:
    """Record every file under `folder` (recursively, but not the manifest itself, nor the top-level entries named in
    `exclude`: folders that keep their own manifest); returns the manifest's path. Written under a temporary name and
    renamed, so a manifest is never half-written."""
    folder = Path(folder)
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.name != MANIFEST
        and not p.name.startswith(".")
        and p.relative_to(folder).parts[0] not in exclude
    )
    entries = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files}
    target = folder / MANIFEST
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"format": "ttt-checksums-1", "files": entries}, indent=1) + "\n")
    os.replace(tmp, target)
    return target


def verify_manifest(folder: str | os.PathLike) -> bool:
    """Check every file the manifest lists; False when there is no manifest.

    Raises DamagedFileError naming the first file that is missing, of another size or of another checksum (or the
    manifest itself when it is unreadable)."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        entries = json.loads(manifest.read_text())["files"]
        items = [(name, int(e["bytes"]), str(e["sha256"])) for name, e in entries.items()]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, UnicodeDecodeError) as err:
        raise DamagedFileError(manifest, f"not a readable checksum manifest ({type(err).__name__})") from None
    for name, size, digest in items:
        path = folder / name
        if not path.is_file():
            raise DamagedFileError(path, f"missing (listed in {MANIFEST})")
        if path.stat().st_size != size:
            raise DamagedFileError(path, f"{path.stat().st_size} bytes, {size} when it was written (truncated?)")
        if sha256_of(path) != digest:
            raise DamagedFileError(path, "its sha256 differs from the one recorded when it was written")
    return True
