"""Write a folder atomically: build it under a temporary name beside the target, then rename it into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def check_target(out: Path, overwrite: bool) -> None:
    """Raise FileExistsError naming `out` when it is a file, or a non-empty folder and not `overwrite`."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists as a file: give a folder to write to")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --overwrite to replace it)")


@contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out` (with the usual umask permissions, its
    files fsync'ed first when `fsync`), on any error it is removed and `out` is left as it was."""
    out = Path(out)
    check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if fsync:
            for child in tmp.rglob("*"):
                if child.is_file():
                    with open(child, "rb") as fh:
                        os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for child in tmp.rglob("*"):
            os.chmod(child, (0o777 if child.is_dir() else 0o666) & ~umask)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(path: str | os.PathLike, data: bytes, fsync: bool = False) -> Path:
    """Write `data` to `path` atomically: a temporary file beside it (the usual umask permissions, fsync'ed first
    when `fsync`) renamed into place, so a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
