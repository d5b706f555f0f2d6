"""The Hugging Face tokenizer saved with a model encodes and decodes exactly as the tokenizer it was trained with."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer as Backend
from transformers import AutoTokenizer

from ttt.data import ByteTokenizer, bundled_documents, train_bpe
from ttt.data.hf_export import to_hf_tokenizer

TRICKY = [
    "",
    " leading space and  double  spaces\n\n\ttab",
    "ROMEO: héllo 日本語 ✓ 😀 \x00\x01\x7f",
    "text that spells <|bos|> and <|eos|> stays text",
    "’curly’ “quotes” — dashes … ellipsis",
]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [doc.text for doc in bundled_documents()[:3]]


@pytest.fixture(scope="module", params=["byte", "bpe"])
def pair(request, corpus, tmp_path_factory):
    ours = ByteTokenizer() if request.param == "byte" else train_bpe(corpus, vocab_size=600)
    folder = tmp_path_factory.mktemp(request.param)
    to_hf_tokenizer(ours).save_pretrained(folder)
    return ours, AutoTokenizer.from_pretrained(folder)


def test_encode_is_ours(pair, corpus):
    ours, hf = pair
    for text in TRICKY + [doc[:20000] for doc in corpus]:
        assert hf(text).input_ids == ours.encode(text)
        assert hf(text, add_special_tokens=False).input_ids == ours.encode(text)


def test_decode_is_ours_for_any_ids(pair):
    ours, hf = pair
    rng = random.Random(0)
    for _ in range(20):
        ids = [rng.randrange(ours.vocab_size) for _ in range(rng.randrange(1, 400))]
        assert hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == ours.decode(ids)
    for text in TRICKY:
        assert hf.decode(hf(text).input_ids) == text


def test_special_ids_are_ours(pair):
    ours, hf = pair
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (ours.bos_id, ours.eos_id, ours.eos_id)
    assert len(hf) == ours.vocab_size


def test_a_hugging_face_tokenizer_is_saved_as_training_used_it(tmp_path, corpus):
    """A local HF tokenizer whose post-processor adds BOS, and that would match its special tokens in text: the
    saved copy encodes as training did (no BOS added, specials in text are text) and names the BOS/EOS used."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from ttt.data import get_tokenizer

    backend = Backend.from_str(train_bpe(corpus, vocab_size=600).backend.to_str())
    backend.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", backend.token_to_id("<|bos|>"))]
    )
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|bos|>", eos_token="<|eos|>").save_pretrained(
        tmp_path / "source"
    )
    ours = get_tokenizer(tmp_path / "source")
    to_hf_tokenizer(ours).save_pretrained(tmp_path / "saved")
    hf = AutoTokenizer.from_pretrained(tmp_path / "saved")
    for text in TRICKY + [doc[:5000] for doc in corpus]:
        assert hf(text).input_ids == ours.encode(text)
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (ours.bos_id, ours.eos_id, ours.eos_id)
