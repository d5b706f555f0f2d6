"""Read documents (one book, file, JSON line or dataset row each) from the sources `prepare` accepts.

Sources, as strings or paths:
    "bundled"          the public-domain corpus shipped in the package (see `corpus.py`)
    a folder           every `*.txt` file below it (recursively, sorted by relative path), one document each
    a `.jsonl` file    one document per non-blank line, its text under `text_field`
    "hf:NAME[:CONFIG]" the `train` split of a Hugging Face dataset, one document per row (needs `datasets`)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

BUNDLED = "bundled"
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class Document:
    id: str  # stable within its source: the validation split is chosen from these ids
    text: str


def describe_source(source: str | Path) -> str:
    """The source as recorded in a manifest: "bundled", "hf:..." or an absolute path."""
    if isinstance(source, str) and (source == BUNDLED or source.startswith(HF_PREFIX)):
        return source
    return str(Path(source).expanduser().resolve())


def read_documents(source: str | Path, text_field: str = "text") -> list[Document]:
    """All non-empty documents of `source`, in source order. Raises `DataError` when there are none."""
    if isinstance(source, str) and source == BUNDLED:
        # Imported here: the corpus module builds Documents, so it imports this one.
        from .corpus import bundled_documents

        docs = bundled_documents()
    elif isinstance(source, str) and source.startswith(HF_PREFIX):
        docs = _read_hf(source[len(HF_PREFIX) :], text_field)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(
                f"data source {str(source)!r} does not exist: give a folder of .txt files, a .jsonl file, "
                f"{BUNDLED!r} for the bundled corpus, or '{HF_PREFIX}NAME' for a Hugging Face dataset"
            )
        if path.is_dir():
            docs = _read_folder(path)
        elif path.suffix == ".jsonl":
            docs = _read_jsonl(path, text_field)
        else:
            raise DataError(f"data source {str(path)!r} is a file but not a .jsonl file; give a folder of .txt files")
    docs = [d for d in docs if d.text]
    if not docs:
        raise DataError(f"data source {describe_source(source)!r} holds no text (no non-empty documents)")
    return docs


def source_fingerprint(docs: list[Document]) -> str:
    """sha256 over every document id and text: equal fingerprints mean equal inputs to tokenization."""
    digest = hashlib.sha256()
    for doc in docs:
        for part in (doc.id, doc.text):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def _read_folder(folder: Path) -> list[Document]:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"folder {str(folder)!r} contains no .txt files")
    docs = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{str(path)!r} is not UTF-8 text: {err}") from err
        docs.append(Document(path.relative_to(folder).as_posix(), text))
    return docs


def _read_jsonl(path: Path, text_field: str) -> list[Document]:
    docs = []
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{number} is not UTF-8 text: {err}") from err
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number} is not valid JSON: {err}") from err
            if not isinstance(record, dict) or text_field not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise DataError(f"{path}:{number} has no field {text_field!r} (found {keys}); set text_field=...")
            text = record[text_field]
            if not isinstance(text, str):
                raise DataError(f"{path}:{number} field {text_field!r} is {type(text).__name__}, not a string")
            docs.append(Document(f"{path.name}:{number}", text))
    return docs


def _read_hf(spec: str, text_field: str) -> list[Document]:
    name, _, config = spec.partition(":")
    try:
        import datasets
    except ImportError as err:
        raise DataError(
            f"reading the Hugging Face dataset {name!r} needs the `datasets` package (pip install datasets), "
            "which ttt does not install; or export the text to a .jsonl file or a folder of .txt files"
        ) from err
    try:
        rows = datasets.load_dataset(name, config or None, split="train")
    except Exception as err:
        raise DataError(
            f"could not load the Hugging Face dataset {name!r} (config {config or None!r}, split 'train'): "
            f"{type(err).__name__}: {err}. Offline, it must already be in the local datasets cache."
        ) from err
    if text_field not in rows.column_names:
        raise DataError(f"Hugging Face dataset {name!r} has no column {text_field!r} (columns: {rows.column_names})")
    return [Document(f"{name}:{i}", text) for i, text in enumerate(rows[text_field])]
