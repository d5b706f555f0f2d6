import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ttt import data


def test_token_layout_and_manifest(tmp_path: Path, text_folder: Path) -> None:
    prepared = data.prepare(text_folder, tmp_path / "out", tokenizer="byte", val_fraction=0.2)
    docs = {d.id: d.text for d in data.read_documents(text_folder)}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["vocab_size"] == 258
    assert manifest["source"]["documents"] == 5
    for split in ("train", "val"):
        tokens = prepared.tokens(split)
        assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
        index = prepared.documents(split)
        assert manifest["splits"][split]["documents"] == len(index)
        assert manifest["splits"][split]["tokens"] == len(tokens) == sum(d["tokens"] for d in index)
        for entry in index:
            piece = tokens[entry["offset"] : entry["offset"] + entry["tokens"]]
            assert piece[0] == 256 and piece[-1] == 257
            assert bytes(piece[1:-1].astype(np.uint8)).decode("utf-8") == docs[entry["id"]]


def test_split_is_by_document_and_deterministic(text_folder: Path) -> None:
    docs = data.read_documents(text_folder)
    first = data.split_documents(docs, 0.4, seed=3)
    assert first == data.split_documents(docs, 0.4, seed=3)
    reordered = data.split_documents(list(reversed(docs)), 0.4, seed=3)
    assert {k: {d.id for d in v} for k, v in reordered.items()} == {k: {d.id for d in v} for k, v in first.items()}
    assert len(first["val"]) == 2 and len(first["train"]) == 3
    assert not {d.id for d in first["val"]} & {d.id for d in first["train"]}
    assert "val" not in data.split_documents(docs, 0.0)
    with pytest.raises(data.DataError, match="val_fraction"):
        data.split_documents(docs, 1.0)


def test_bundled_validation_disjoint_from_training(bundled_byte: data.PreparedData) -> None:
    train = {d["id"] for d in bundled_byte.documents("train")}
    val = {d["id"] for d in bundled_byte.documents("val")}
    assert len(train) + len(val) == 45 and not train & val
    assert val == {"henry_vi_part_3", "macbeth", "rape_of_lucrece", "richard_ii"}
    assert bundled_byte.manifest["splits"]["train"]["tokens"] > 5_000_000


def test_bpe_trained_on_training_split_only(tmp_path: Path, text_folder: Path) -> None:
    prepared = data.prepare(text_folder, tmp_path / "out", tokenizer="bpe:300", val_fraction=0.2)
    tok = prepared.tokenizer
    assert isinstance(tok, data.BPETokenizer) and prepared.manifest["tokenizer"]["spec"] == "bpe:300"
    val_text = {d.id: d.text for d in data.read_documents(text_folder)}
    for entry in prepared.documents("val"):
        ids = prepared.tokens("val")[entry["offset"] : entry["offset"] + entry["tokens"]].tolist()
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert tok.decode(ids) == val_text[entry["id"]]
    assert data.load_prepared(tmp_path / "out").tokenizer.fingerprint == tok.fingerprint


def test_corrupted_token_file_is_detected(tmp_path: Path, text_folder: Path) -> None:
    data.prepare(text_folder, tmp_path / "out")
    path = tmp_path / "out" / "train.bin"
    raw = bytearray(path.read_bytes())
    raw[10] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(data.DataError, match="train.bin' is corrupted"):
        data.load_prepared(tmp_path / "out")
    with pytest.raises(data.DataError, match="corrupted"):
        data.prepare(text_folder, tmp_path / "out")
    path.write_bytes(bytes(raw[:-2]))
    with pytest.raises(data.DataError, match="truncated"):
        data.load_prepared(tmp_path / "out", verify=False)


def test_reuse_and_mismatches(tmp_path: Path, text_folder: Path) -> None:
    out = tmp_path / "out"
    first = data.prepare(text_folder, out, tokenizer="byte")
    mtime = (out / "train.bin").stat().st_mtime_ns
    again = data.prepare(text_folder, out, tokenizer="byte")
    assert again.manifest == first.manifest and (out / "train.bin").stat().st_mtime_ns == mtime
    with pytest.raises(data.DataError, match="tokenizer 'byte', asked 'bpe:300'"):
        data.prepare(text_folder, out, tokenizer="bpe:300")
    with pytest.raises(data.DataError, match="split seed"):
        data.prepare(text_folder, out, seed=1)
    (text_folder / "a.txt").write_text("changed")
    with pytest.raises(data.DataError, match="documents changed"):
        data.prepare(text_folder, out)
    rebuilt = data.prepare(text_folder, out, overwrite=True)
    assert rebuilt.manifest["source"]["sha256"] != first.manifest["source"]["sha256"]


def test_load_with_wrong_tokenizer(tmp_path: Path, text_folder: Path) -> None:
    data.prepare(text_folder, tmp_path / "out", tokenizer="bpe:300")
    other = data.train_bpe(["something else entirely"] * 10, 300)
    with pytest.raises(data.DataError, match="tokenizer mismatch.*'bpe-"):
        data.load_prepared(tmp_path / "out", tokenizer=other)
    with pytest.raises(data.DataError, match="tokenizer mismatch.*not 'byte'"):
        data.load_prepared(tmp_path / "out", tokenizer="byte")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda out: None, "does not exist"),
        (lambda out: out.mkdir(), "has no manifest.json"),
        (lambda out: (out.mkdir(), (out / "manifest.json").write_text('{"format": "ttt-tok')), "manifest.json.*not"),
        (lambda out: (out.mkdir(), (out / "manifest.json").write_text('{"format": 1}')), "manifest.json.*tokenizer"),
    ],
    ids=["missing-folder", "no-manifest", "torn-manifest", "manifest-without-fields"],
)
def test_load_prepared_errors(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path / "out")
    with pytest.raises(data.DataError, match=message):
        data.load_prepared(tmp_path / "out")


def test_prepare_refuses_foreign_folder_and_short_splits(tmp_path: Path, text_folder: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(data.DataError, match="not empty"):
        data.prepare(text_folder, tmp_path / "busy")
    with pytest.raises(data.DataError, match="fewer than one window of seq_len \\+ 1 = 100001"):
        data.prepare(text_folder, tmp_path / "short", seq_len=100_000)
    assert not (tmp_path / "short" / "manifest.json").exists()
    assert not list((tmp_path / "short").glob("*.bin*"))


class WideTokenizer(data.ByteTokenizer):
    """Byte ids shifted past 65535, to exercise uint32 token files."""

    @property
    def name(self) -> str:
        return "wide"

    @property
    def vocab_size(self) -> int:
        return 70_000

    def encode(self, text: str) -> list[int]:
        return [69_000 + b for b in text.encode("utf-8")]

    def config(self) -> dict[str, Any]:
        return {"kind": "wide"}


def test_uint32_for_large_vocab(tmp_path: Path, text_folder: Path) -> None:
    prepared = data.prepare(text_folder, tmp_path / "out", tokenizer=WideTokenizer())
    assert prepared.manifest["dtype"] == "uint32"
    tokens = prepared.tokens("train")
    assert tokens.dtype == np.uint32 and tokens.max() >= 69_000
