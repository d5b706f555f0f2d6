import json
import sys
import types
from pathlib import Path

import pytest

from ttt import data

from .conftest import TEXTS, write_folder


def test_folder_documents_sorted_by_relative_path(text_folder: Path) -> None:
    docs = data.read_documents(text_folder)
    assert [d.id for d in docs] == sorted(TEXTS)
    assert {d.id: d.text for d in docs} == TEXTS


def test_jsonl_documents_with_custom_field(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    rows = [{"body": "first ünïcode"}, {"body": "second", "other": 1}]
    path.write_text("\n".join(json.dumps(r) for r in rows[:1]) + "\n\n" + json.dumps(rows[1]) + "\n")
    docs = data.read_documents(path, text_field="body")
    assert [(d.id, d.text) for d in docs] == [("docs.jsonl:1", "first ünïcode"), ("docs.jsonl:3", "second")]


def test_bundled_corpus_loads() -> None:
    docs = data.bundled_documents()
    index = data.bundled_index()["documents"]
    assert len(docs) == len(index) == 45
    assert len({d.id for d in docs}) == 45
    assert "hamlet" in {d.id for d in docs} and "paradise_lost" in {d.id for d in docs}
    assert sum(len(d.text) for d in docs) > 5_000_000
    assert all(entry["source"].startswith("http://www.gutenberg.org/") for entry in index)
    provenance = Path(data.__file__).parent / "corpus" / "PROVENANCE.md"
    assert all(entry["file"] in provenance.read_text() for entry in index)


def write_bytes(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("make_source", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: root, "no .txt files"),
        (lambda root: write_folder(root, {"blank.txt": ""}), "holds no text"),
        (lambda root: write_folder(root, {"notes.md": "hi"}) / "notes.md", "not a .jsonl"),
        (lambda root: write_folder(root, {"x.jsonl": ""}) / "x.jsonl", "holds no text"),
        (lambda root: write_folder(root, {"x.jsonl": '{"text": "ok"}\n{"txt": "typo"}\n'}) / "x.jsonl", "x.jsonl:2"),
        (lambda root: write_folder(root, {"x.jsonl": '{"text": 3}\n'}) / "x.jsonl", "is int, not a string"),
        (lambda root: write_folder(root, {"x.jsonl": "{oops\n"}) / "x.jsonl", "x.jsonl:1 is not valid JSON"),
        (
            lambda root: write_bytes(root / "x.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n'),
            "x.jsonl:2 is not UTF-8",
        ),
    ],
    ids=[
        "missing-path",
        "empty-folder",
        "empty-text",
        "not-jsonl",
        "empty-jsonl",
        "missing-field",
        "not-string",
        "bad-json",
        "latin1-jsonl",
    ],
)
def test_bad_sources_raise_clear_errors(tmp_path: Path, make_source, message: str) -> None:
    with pytest.raises(data.DataError, match=message):
        data.read_documents(make_source(tmp_path))


def test_missing_field_message_names_field_and_keys(tmp_path: Path) -> None:
    path = write_folder(tmp_path, {"x.jsonl": '{"content": "a"}\n'}) / "x.jsonl"
    with pytest.raises(data.DataError, match=r"no field 'text' \(found \['content'\]\)"):
        data.read_documents(path)


def test_hf_dataset_without_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import datasets` raise ImportError, installed or not.
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(data.DataError, match="needs the `datasets` package"):
        data.read_documents("hf:wikitext:wikitext-2-raw-v1")


def test_hf_dataset_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def load_dataset(name: str, config: str | None, split: str):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(data.DataError, match="could not load the Hugging Face dataset 'wikitext'.*Offline"):
        data.read_documents("hf:wikitext:wikitext-2-raw-v1")


def test_hf_dataset_rows_become_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    class Rows:
        column_names = ["text", "label"]

        def __getitem__(self, column: str) -> list[str]:
            return ["first row", "", "third row"]

    fake = types.SimpleNamespace(load_dataset=lambda name, config, split: Rows())
    monkeypatch.setitem(sys.modules, "datasets", fake)
    docs = data.read_documents("hf:local/set")
    assert [(d.id, d.text) for d in docs] == [("local/set:0", "first row"), ("local/set:2", "third row")]
    with pytest.raises(data.DataError, match="no column 'body'"):
        data.read_documents("hf:local/set", text_field="body")
