"""Token choice (`choose`) and incremental text (`TextTracker`) without a server: greedy and near-zero temperatures,
filters, seeded draws; multi-byte characters split across tokens, stop strings across tokens, the pieces adding up
to the whole decoding while each step decodes a short window only."""

from __future__ import annotations

import random

import pytest
import torch

from ttt.data import ByteTokenizer
from ttt.serve.sampling import SamplingParams, TextTracker, choose

LOGITS = torch.tensor([0.1, 2.0, 1.9, -3.0, 0.5], dtype=torch.float64)


def draw(params: SamplingParams, seed: int, logits=LOGITS) -> int:
    return choose(logits, params, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("temperature", [0.0, 1e-310, 1e-8, 9e-6], ids=["zero", "1e-310", "1e-8", "9e-6"])
def test_tiny_temperature_is_greedy(temperature):
    params = SamplingParams(max_tokens=1, temperature=temperature)
    assert {draw(params, seed) for seed in range(20)} == {1}


def test_small_temperature_still_samples_finite():
    # 1e-5 is sampled (not greedy): logits / 1e-5 stay finite in float64, the argmax wins
    assert draw(SamplingParams(max_tokens=1, temperature=1e-5), 0) == 1


@pytest.mark.parametrize(
    "params,allowed",
    [
        (SamplingParams(max_tokens=1, top_k=1), {1}),
        (SamplingParams(max_tokens=1, top_k=2), {1, 2}),
        (SamplingParams(max_tokens=1, top_p=1e-9), {1}),
        (SamplingParams(max_tokens=1, top_p=0.6), {1, 2}),
    ],
    ids=["top_k=1", "top_k=2", "top_p=tiny", "top_p=0.6"],
)
def test_filters_keep_only_the_allowed_tokens(params, allowed):
    got = {draw(params, seed) for seed in range(200)}
    assert got == allowed


def test_seeded_draws_repeat_and_follow_the_distribution():
    params = SamplingParams(max_tokens=1, temperature=1.0)
    assert [draw(params, s) for s in range(50)] == [draw(params, s) for s in range(50)]
    counts = torch.bincount(torch.tensor([draw(params, s) for s in range(4000)]), minlength=5).double() / 4000
    assert torch.allclose(counts, torch.softmax(LOGITS, -1), atol=0.03)


class CountingTokenizer(ByteTokenizer):
    """The byte tokenizer, recording how many ids each decode call gets."""

    def __init__(self) -> None:
        super().__init__()
        self.lengths: list[int] = []

    def decode(self, ids):
        self.lengths.append(len(ids))
        return super().decode(ids)


def run(tracker: TextTracker, ids: list[int]) -> tuple[list[str], bool]:
    pieces = []
    for token in ids:
        text, stopped = tracker.add(token)
        pieces.append(text)
        if stopped:
            return pieces, True
    return pieces + [tracker.flush()], False


def test_multibyte_characters_split_across_tokens():
    tok = ByteTokenizer()
    ids = list("a€é😀b".encode())
    pieces, stopped = run(TextTracker(tok, ()), ids)
    assert not stopped and "".join(pieces) == "a€é😀b"
    # nothing is released mid-character: each piece is whole characters
    assert pieces[:4] == ["a", "", "", "€"] and all("\ufffd" not in p for p in pieces)


def test_invalid_bytes_come_out_as_the_whole_decoding_does():
    tok = ByteTokenizer()
    ids = [0x41, 0x80, 0xE2, 0x82, 0x42, 0xFF, 0xF0, 0x9F, 0x98, 0x80, 0xE2]
    assert "".join(run(TextTracker(tok, ()), ids)[0]) == tok.decode(ids)


@pytest.mark.parametrize(
    "text,stops,expected",
    [
        ("hello world", ("lo w",), "hel"),
        ("hello world", ("wor", "o"), "hell"),
        ("ab€cd", ("€c",), "ab"),
        ("aaab", ("aab",), "a"),
        ("hello", ("lox",), "hello"),
    ],
    ids=["across-tokens", "first-of-two", "multibyte-stop", "overlapping-prefix", "prefix-only"],
)
def test_stop_strings(text, stops, expected):
    tok = ByteTokenizer()
    pieces, stopped = run(TextTracker(tok, stops), list(text.encode()))
    assert "".join(pieces) == expected and stopped == (expected != text)


def test_random_bytes_add_up_and_each_step_decodes_a_short_window():
    rng = random.Random(0)
    for trial in range(30):
        ids = [rng.choice([rng.randrange(256), rng.randrange(0x80, 0x100)]) for _ in range(400)]
        ids += list(b"ok")  # a valid ending, so the last window is short too
        tok = CountingTokenizer()
        tracker = TextTracker(tok, ("zq",))
        pieces, stopped = run(tracker, ids)
        whole = ByteTokenizer().decode(ids)
        if stopped:
            assert "".join(pieces) == whole[: whole.index("zq")]
        else:
            assert "".join(pieces) == whole, trial
    text = list(("The quick brown fox. " * 50).encode())
    tok = CountingTokenizer()
    run(TextTracker(tok, ()), text)
    assert max(tok.lengths) <= 8  # not the whole completion at every token
