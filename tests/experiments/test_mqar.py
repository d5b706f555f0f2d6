"""The MQAR generator's properties, the model's pieces, and the smoke configurations of every experiment."""

from __future__ import annotations

import json

import pytest
import torch

from ttt.experiments.mqar.data import IGNORE, MQARSpec, mqar_examples
from ttt.experiments.mqar.model import MIXERS, MambaMixerWrapper, MQARModel, mixer_state_bytes
from ttt.experiments.mqar.train import MQARRun, train_mqar

SPEC = MQARSpec(vocab_size=512, seq_len=64, num_kv_pairs=8)


@pytest.fixture(scope="module")
def examples():
    return mqar_examples(SPEC, 400, seed=3)


def test_keys_and_values_come_from_their_halves_and_are_unique(examples):
    inputs, _ = examples
    N, half = SPEC.num_kv_pairs, SPEC.vocab_size // 2
    keys, values = inputs[:, 0 : 2 * N : 2], inputs[:, 1 : 2 * N : 2]
    assert keys.min() >= 1 and keys.max() < half
    assert values.min() >= half and values.max() < SPEC.vocab_size
    for row in range(len(inputs)):
        assert len(set(keys[row].tolist())) == N and len(set(values[row].tolist())) == N


def test_labels_only_at_queries_and_each_answers_its_key(examples):
    inputs, labels = examples
    N = SPEC.num_kv_pairs
    assert ((labels != IGNORE).sum(1) == N).all()
    for row in range(len(inputs)):
        pairs = dict(zip(inputs[row, 0 : 2 * N : 2].tolist(), inputs[row, 1 : 2 * N : 2].tolist()))
        pos = (labels[row] != IGNORE).nonzero().flatten()
        # after the context, at even offsets from it (the query slots), each key asked once
        assert (pos >= 2 * N).all() and ((pos - 2 * N) % 2 == 0).all()
        assert sorted(inputs[row, pos].tolist()) == sorted(pairs)
        for p in pos.tolist():
            assert labels[row, p].item() == pairs[inputs[row, p].item()]


def test_deterministic_in_the_seed():
    a, b, c = (mqar_examples(SPEC, 5, seed=s) for s in (1, 1, 2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_gap_distribution_follows_the_power_law():
    """Gaps without replacement from p(g) ∝ (g + 1)^(a − 1): the first gap of every example follows p exactly;
    checked on the probability of the smallest slots and the mean gap, over many examples."""
    spec = MQARSpec(vocab_size=512, seq_len=64, num_kv_pairs=1)
    _, labels = mqar_examples(spec, 20_000, seed=0)
    gaps = ((labels != IGNORE).nonzero()[:, 1] - 2) // 2
    p = spec.gap_probabilities()
    counts = torch.bincount(gaps, minlength=spec.num_slots).double() / len(gaps)
    assert (counts[:3] - p[:3]).abs().max() < 0.012
    mean = (torch.arange(spec.num_slots, dtype=torch.float64) * p).sum()
    assert abs(gaps.double().mean() - mean) < 0.3
    # heavy head: gap 0 is much likelier than the last gap
    assert p[0] / p[-1] > 20


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(vocab_size=64, seq_len=64), "vocab_size .* larger than seq_len"),
        (dict(seq_len=63), "even"),
        (dict(seq_len=64, num_kv_pairs=17), "at least 4"),
        (dict(num_kv_pairs=0), "num_kv_pairs"),
    ],
    ids=["V<=T", "odd_T", "too_many_pairs", "no_pairs"],
)
def test_bad_specs_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MQARSpec(**kwargs)
    with pytest.raises(ValueError, match=message):
        MQARRun(**kwargs)


def test_bad_run_options_are_named():
    with pytest.raises(ValueError, match="mixer"):
        MQARRun(mixer="rnn")
    with pytest.raises(ValueError, match="num_train"):
        MQARRun(num_train=0)


def test_logits_only_at_labels_give_the_full_head_loss():
    torch.manual_seed(0)
    inputs, labels = mqar_examples(SPEC, 4, seed=0)
    model = MQARModel("attention", SPEC.vocab_size, 32, SPEC.seq_len)
    loss, correct, count = model(inputs, labels)
    full = model.hidden(inputs) @ model.embed.weight.T  # [B, T, V]
    ref = torch.nn.functional.cross_entropy(full.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    assert torch.allclose(loss, ref, atol=1e-6) and count == 4 * SPEC.num_kv_pairs


def test_mamba_scan_equals_the_transformers_mixer():
    torch.manual_seed(0)
    wrapper = MambaMixerWrapper(16)
    x = torch.randn(2, 13, 16)
    with torch.no_grad():
        assert (wrapper(x) - wrapper.mixer(x)).abs().max() < 1e-5


@pytest.mark.parametrize("mixer", MIXERS)
def test_every_mixer_trains_a_step_and_has_a_state_size(mixer):
    result = train_mqar(
        MQARRun(
            mixer=mixer,
            vocab_size=128,
            seq_len=32,
            num_kv_pairs=2,
            d_model=16,
            num_train=8,
            num_test=4,
            batch_size=4,
            epochs=1,
        )
    )
    assert result["steps"] == 2 and 0.0 <= result["accuracy"] <= 1.0 and not result["diverged"]
    assert result["state_bytes"] == mixer_state_bytes(mixer, 16, 2, 32)


def test_attention_state_grows_with_length_and_recurrent_states_do_not():
    assert mixer_state_bytes("attention", 64, 2, 256) == 4 * mixer_state_bytes("attention", 64, 2, 64)
    for mixer in set(MIXERS) - {"attention"}:
        assert mixer_state_bytes(mixer, 64, 2, 256) == mixer_state_bytes(mixer, 64, 2, 64)


def test_sweep_smoke_and_resume(tmp_path, capsys):
    from ttt.experiments.mqar.sweep import main

    args = ["--smoke", "--out", str(tmp_path), "--mixers", "attention,delta-rule"]
    main(args)
    files = sorted((tmp_path / "runs").glob("*.json"))
    assert len(files) == 2 and (tmp_path / "summary.md").exists() and (tmp_path / "mqar.png").exists()
    stamp = [f.stat().st_mtime_ns for f in files]
    main(args)  # finished runs are skipped
    assert [f.stat().st_mtime_ns for f in files] == stamp
    assert "attention" in (tmp_path / "summary.md").read_text()
    assert json.loads(files[0].read_text())["planned_steps"] == 2


def test_fast_mamba_scan_keeps_the_model_function():
    from transformers import MambaConfig, MambaForCausalLM

    from ttt.experiments.fast_mamba import fast_mamba_scan

    torch.manual_seed(0)
    model = MambaForCausalLM(MambaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, state_size=4)).eval()
    ids = torch.randint(0, 50, (2, 11))
    with torch.no_grad():
        reference = model(input_ids=ids, use_cache=False).logits
        with fast_mamba_scan():
            fast = model(input_ids=ids, use_cache=False).logits
        again = model(input_ids=ids, use_cache=False).logits
    assert (fast - reference).abs().max() < 1e-5 and torch.equal(again, reference)
