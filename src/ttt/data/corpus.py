"""The bundled default corpus: 45 public-domain English books (42 Shakespeare plays and poems, 3 Milton works).

The texts are Project Gutenberg eBooks as cleaned by the Open Shakespeare package; `corpus/PROVENANCE.md` lists
every file with its source and license. `corpus/index.json` records each file's id, title, author, source URL
and the sha256 of its text, which is checked on every read.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from importlib import resources
from typing import Any

from .documents import Document
from .errors import DataError


def bundled_index() -> dict[str, Any]:
    """The corpus index: {"name": ..., "documents": [{"id", "file", "title", "author", "source", "sha256", ...}]}."""
    return json.loads(
        resources.files(__package__).joinpath("corpus").joinpath("index.json").read_text(encoding="utf-8")
    )


def bundled_documents() -> list[Document]:
    """Every bundled book as one document, in index order (ids like "hamlet", "paradise_lost")."""
    folder = resources.files(__package__).joinpath("corpus")
    docs = []
    for entry in bundled_index()["documents"]:
        data = gzip.decompress(folder.joinpath(entry["file"]).read_bytes())
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise DataError(f"bundled corpus file {entry['file']!r} is corrupted (sha256 mismatch); reinstall ttt")
        docs.append(Document(entry["id"], data.decode("utf-8")))
    return docs
