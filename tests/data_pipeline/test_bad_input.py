"""`ttt data prepare` on awkward input: a single document, bad options, and no folder left behind on errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttt import data
from ttt.cli import main

from .conftest import write_folder

ONE = {"book.txt": "Ærø, naïve café 🙂 — " * 50}


def test_single_document_is_split_by_characters(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "one", ONE)
    text = ONE["book.txt"]
    prepared = data.prepare(folder, tmp_path / "out", val_fraction=0.25)
    manifest = prepared.manifest
    assert manifest["splits"]["train"]["documents"] == manifest["splits"]["val"]["documents"] == 1
    ids = {split: (tmp_path / "out" / f"{split}.docs.jsonl").read_text() for split in ("train", "val")}
    assert '"book.txt#train"' in ids["train"] and '"book.txt#val"' in ids["val"]
    # the last quarter of the characters (not bytes): both parts decode exactly and join to the text
    n_val = round(0.25 * len(text))
    val = prepared.tokenizer.decode(prepared.tokens("val").tolist())
    train = prepared.tokenizer.decode(prepared.tokens("train").tolist())
    assert val == text[-n_val:] and train == text[:-n_val] and "\ufffd" not in train + val


def test_single_document_split_rule() -> None:
    (train,), (val,) = data.split_documents([data.Document("a", "abcdefghij")], 0.3).values()
    assert (train.id, train.text, val.id, val.text) == ("a#train", "abcdefg", "a#val", "hij")
    (train,), (val,) = data.split_documents([data.Document("a", "ab")], 0.01).values()
    assert (train.text, val.text) == ("a", "b")  # at least one character each side
    assert data.split_documents([data.Document("a", "abc")], 0.0) == {"train": [data.Document("a", "abc")]}


def test_single_document_too_short_names_it() -> None:
    with pytest.raises(data.DataError, match=r"'tiny\.txt' has 1 character.*val_fraction=0"):
        data.split_documents([data.Document("tiny.txt", "x")], 0.1)


def test_cli_prepares_a_folder_of_one_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_folder(tmp_path / "one", ONE)
    assert main(["data", "prepare", str(folder), str(tmp_path / "out")]) == 0
    assert data.load_prepared(tmp_path / "out").manifest["splits"]["val"]["documents"] == 1


def test_missing_source_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    with pytest.raises(data.DataError, match="nowhere.*does not exist"):
        data.prepare(tmp_path / "nowhere", out)
    assert not out.exists()
    assert main(["data", "prepare", str(tmp_path / "nowhere"), str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"seq_len": 0}, "seq_len must be >= 1, got 0"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\), got 1.0"),
        ({"val_fraction": -0.5}, r"val_fraction must be in \[0, 1\), got -0.5"),
        ({"seq_len": 10**6}, "split 'train' has .* tokens, fewer than one window of seq_len \\+ 1 = 1000001"),
    ],
)
def test_bad_options_leave_no_folder(tmp_path: Path, text_folder: Path, options: dict, message: str) -> None:
    out = tmp_path / "new" / "out"
    with pytest.raises(data.DataError, match=message):
        data.prepare(text_folder, out, **options)
    assert not (tmp_path / "new").exists()  # neither the folder nor the parent it would have made


def test_failure_keeps_an_empty_folder_the_caller_made(tmp_path: Path, text_folder: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(data.DataError, match="fewer than one window"):
        data.prepare(text_folder, out, seq_len=10**6)
    assert out.is_dir() and not any(out.iterdir())


def test_out_dir_inside_a_file_is_named(tmp_path: Path, text_folder: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(data.DataError, match=r"out_dir '.*file/out' is inside '.*file', a file"):
        data.prepare(text_folder, tmp_path / "file" / "out")
    with pytest.raises(data.DataError, match=r"out_dir '.*file' is a file, not a folder"):
        data.prepare(text_folder, tmp_path / "file")
