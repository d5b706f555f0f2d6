from pathlib import Path

import pytest

from ttt import data

ROUND_TRIP = {
    "ascii": "Hamlet. To be, or not to be:\n\tthat is the question.  ",
    "latin1": "naïve café, Ærø, façade",
    "cjk": "日本語のテキストと中文",
    "emoji": "🙂🏳️‍🌈 mixed with text",
    "special-lookalike": "text that spells <|bos|> and <|eos|> literally",
    "empty": "",
    "newlines": "\n\n\r\n \n",
}


@pytest.fixture(scope="module")
def bpe() -> data.BPETokenizer:
    return data.train_bpe([text * 20 for text in ROUND_TRIP.values()] + ["the king the queen the court"] * 50, 400)


@pytest.mark.parametrize("text", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_byte_round_trip(text: str) -> None:
    tok = data.ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.decode([tok.bos_id, *ids, tok.eos_id]) == text


def test_byte_scheme() -> None:
    tok = data.get_tokenizer("byte")
    assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (258, 256, 257)
    with pytest.raises(ValueError, match=r"\[0, 258\)"):
        tok.decode([300])


@pytest.mark.parametrize("text", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_bpe_round_trip(bpe: data.BPETokenizer, text: str) -> None:
    ids = bpe.encode(text)
    assert bpe.bos_id not in ids and bpe.eos_id not in ids
    assert bpe.decode(ids) == text
    assert bpe.decode([bpe.bos_id, *ids, bpe.eos_id]) == text


def test_bpe_compresses_and_is_deterministic(bpe: data.BPETokenizer) -> None:
    text = "the king the queen the court"
    assert len(bpe.encode(text)) < len(text.encode("utf-8")) / 2
    again = data.train_bpe([t * 20 for t in ROUND_TRIP.values()] + ["the king the queen the court"] * 50, 400)
    assert again.fingerprint == bpe.fingerprint


@pytest.mark.parametrize("make", [data.ByteTokenizer, None], ids=["byte", "bpe"])
def test_save_load_keeps_fingerprint(tmp_path: Path, bpe: data.BPETokenizer, make) -> None:
    tok = make() if make else bpe
    loaded = data.load_tokenizer(tok.save(tmp_path / "tok"))
    assert type(loaded) is type(tok)
    assert loaded.fingerprint == tok.fingerprint
    assert loaded.encode(ROUND_TRIP["cjk"]) == tok.encode(ROUND_TRIP["cjk"])
    assert data.get_tokenizer(tmp_path / "tok").fingerprint == tok.fingerprint


def test_bpe_from_tokenizer_json(tmp_path: Path, bpe: data.BPETokenizer) -> None:
    bpe.save(tmp_path / "tok")
    loaded = data.get_tokenizer(str(tmp_path / "tok" / "tokenizer.json"))
    assert isinstance(loaded, data.BPETokenizer) and loaded.fingerprint == bpe.fingerprint


def test_hf_tokenizer_from_local_folder(tmp_path: Path, bpe: data.BPETokenizer) -> None:
    from tokenizers import Tokenizer as Backend
    from transformers import PreTrainedTokenizerFast

    # A copy: transformers may change run-time settings of the backend object it wraps.
    backend = Backend.from_str(bpe.backend.to_str())
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|bos|>", eos_token="<|eos|>")
    hf.save_pretrained(tmp_path / "hf")
    tok = data.get_tokenizer(tmp_path / "hf")
    assert isinstance(tok, data.HFTokenizer)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (bpe.bos_id, bpe.eos_id, bpe.vocab_size)
    for text in ROUND_TRIP.values():
        assert tok.decode(tok.encode(text)) == text
    assert data.load_tokenizer(tok.save(tmp_path / "saved")).fingerprint == tok.fingerprint


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bpe:4096", "must be trained first"),
        ("bpe:many", "bpe:N"),
        ("./no/such/tokenizer", "does not exist"),
        ("no-such-org/no-such-tokenizer", "local files only"),
    ],
    ids=["untrained-bpe", "bad-bpe-size", "missing-path", "offline-hub-name"],
)
def test_get_tokenizer_errors(spec: str, message: str) -> None:
    with pytest.raises(data.DataError, match=message):
        data.get_tokenizer(spec)


def test_folder_without_tokenizer_files(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="local files only"):
        data.get_tokenizer(tmp_path)
    with pytest.raises(data.DataError, match="ttt_tokenizer.json is missing"):
        data.load_tokenizer(tmp_path)


def test_bpe_vocab_too_small() -> None:
    with pytest.raises(data.DataError, match="at least 258"):
        data.train_bpe(["abc"], 100)
