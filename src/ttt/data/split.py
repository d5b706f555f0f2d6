"""Deterministic train/validation split by whole documents (or by characters of a single document).

Rule: rank documents by sha256(f"{seed}:{id}") and hold out the first n_val of that ranking, with
n_val = round(val_fraction * n) clipped to [1, n - 1] when val_fraction > 0 (0 when it is 0). A document
therefore lands in one split only, the choice depends on its id and the seed (not on file order), and both
splits keep the source order.

A source of one document (e.g. a folder holding one .txt file) cannot be split by document: its text is cut
instead, at a character (not byte) boundary. The last round(val_fraction * len(text)) characters, clipped to
[1, len(text) - 1], become the validation document "ID#val" and the rest the training document "ID#train".
"""

from __future__ import annotations

import hashlib

from .documents import Document
from .errors import DataError

TRAIN_SUFFIX = "#train"
VAL_SUFFIX = "#val"


def split_documents(docs: list[Document], val_fraction: float, seed: int = 0) -> dict[str, list[Document]]:
    """{"train": [...], "val": [...]} ("val" absent when val_fraction is 0).

    Raises `DataError` for a val_fraction outside [0, 1), duplicate document ids, no documents, or (with a
    validation split) a single document shorter than 2 characters.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = [doc.id for doc in docs]
    if len(set(ids)) != len(ids):
        raise DataError("document ids must be unique to split by document")
    if val_fraction == 0.0:
        return {"train": list(docs)}
    if not docs:
        raise DataError("there are no documents to split")
    if len(docs) == 1:
        return _split_text(docs[0], val_fraction)
    n_val = min(max(round(val_fraction * len(docs)), 1), len(docs) - 1)
    ranking = sorted(docs, key=lambda doc: hashlib.sha256(f"{seed}:{doc.id}".encode()).hexdigest())
    held_out = {doc.id for doc in ranking[:n_val]}
    return {
        "train": [doc for doc in docs if doc.id not in held_out],
        "val": [doc for doc in docs if doc.id in held_out],
    }


def _split_text(doc: Document, val_fraction: float) -> dict[str, list[Document]]:
    """The single document cut in two: its last `val_fraction` of characters is the validation document."""
    n = len(doc.text)
    if n < 2:
        raise DataError(
            f"the source's only document {doc.id!r} has {n} character(s): a validation split needs at least 2 "
            "(add text or documents, or set val_fraction=0)"
        )
    n_val = min(max(round(val_fraction * n), 1), n - 1)
    return {
        "train": [Document(doc.id + TRAIN_SUFFIX, doc.text[: n - n_val])],
        "val": [Document(doc.id + VAL_SUFFIX, doc.text[n - n_val :])],
    }
