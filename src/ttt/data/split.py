"""Deterministic train/validation split by whole documents.

Rule: rank documents by sha256(f"{seed}:{id}") and hold out the first n_val of that ranking, with
n_val = round(val_fraction * n) clipped to [1, n - 1] when val_fraction > 0 (0 when it is 0). A document
therefore lands in one split only, the choice depends on its id and the seed (not on file order), and both
splits keep the source order.
"""

from __future__ import annotations

import hashlib

from .documents import Document
from .errors import DataError


def split_documents(docs: list[Document], val_fraction: float, seed: int = 0) -> dict[str, list[Document]]:
    """{"train": [...], "val": [...]} ("val" absent when val_fraction is 0)."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = [doc.id for doc in docs]
    if len(set(ids)) != len(ids):
        raise DataError("document ids must be unique to split by document")
    if val_fraction == 0.0:
        return {"train": list(docs)}
    if len(docs) < 2:
        raise DataError(f"a validation split needs at least 2 documents, the source has {len(docs)}")
    n_val = min(max(round(val_fraction * len(docs)), 1), len(docs) - 1)
    ranking = sorted(docs, key=lambda doc: hashlib.sha256(f"{seed}:{doc.id}".encode()).hexdigest())
    held_out = {doc.id for doc in ranking[:n_val]}
    return {
        "train": [doc for doc in docs if doc.id not in held_out],
        "val": [doc for doc in docs if doc.id in held_out],
    }
