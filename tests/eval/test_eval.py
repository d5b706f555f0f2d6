"""ttt eval (perplexity, per-position curve, inner-loop diagnostics) and ttt generate."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch

from ttt import TTTForCausalLM, get_preset
from ttt.data import load_prepared
from ttt.eval import evaluate_run, load_run_model
from ttt.eval.diagnostics import inner_loss_trace, layer_inputs
from ttt.generate import generate_text

from ..train.helpers import train


def test_inner_loop_diagnostics_match_autograd():
    """ℓ(W_t; x_t) and ℓ(W_{t−1}; x_t) in the first mini-batch, against W0 − tf_t Σ_{j≤t} lr_j ∇ℓ_j(W0) by autograd."""
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset("ttt-mlp-tiny-T", mini_batch_size=8)).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ttt_lr_bias" in name:
                p.fill_(2.0)
            if name.endswith(("W1", "W2")):
                p.mul_(20)
    ids = torch.randint(0, 256, (2, 12))
    layer, x = layer_inputs(model, ids)[1]
    trace = inner_loss_trace(layer, x)
    q, k, v, lr, state, _ = layer.projections(x)
    tf = layer.token_factors()
    gamma, beta = layer.ttt_norm_weight.unsqueeze(1), layer.ttt_norm_bias.unsqueeze(1)

    def loss(params, t):  # per row and head
        h = torch.nn.functional.gelu(k[:, t].unsqueeze(-2) @ params[0] + params[1], approximate="tanh")
        z = h @ params[2] + params[3]
        y = torch.nn.functional.layer_norm(z, z.shape[-1:], eps=1e-6) * gamma + beta
        return 0.5 * (y - (v[:, t] - k[:, t]).unsqueeze(-2)).pow(2).sum((-1, -2))

    w0 = [p.detach().clone() for p in state.params]
    grad_sum = [torch.zeros_like(p) for p in w0]
    previous = w0
    for t in range(8):
        leaves = [p.clone().requires_grad_() for p in w0]
        grads = torch.autograd.grad((lr[:, t] * loss(leaves, t)).sum(), leaves)
        grad_sum = [g + d for g, d in zip(grad_sum, grads)]
        current = [p - tf[t] * g for p, g in zip(w0, grad_sum)]
        with torch.no_grad():
            assert abs(loss(current, t).mean().item() - trace["W_t"][t].item()) < 1e-10
            assert abs(loss(previous, t).mean().item() - trace["W_prev"][t].item()) < 1e-10
            assert abs(loss(w0, t).mean().item() - trace["W0"][t].item()) < 1e-10
        previous = current


def test_evaluate_two_checkpoints(tmp_path, bundled_bytes):
    train(tmp_path / "a", bundled_bytes, "--train.steps=2", "--train.ckpt_every=1", "--train.keep_last=5")
    ckpts = sorted((tmp_path / "a" / "checkpoints").iterdir())
    results = evaluate_run([ckpts[0], tmp_path / "a"], tmp_path / "eval", max_windows=4)
    assert [r["checkpoint"] for r in results] == [str(ckpts[0]), str(ckpts[-1])]
    for r in results:
        # the bundled books are long: the few EOS targets (not bytes) barely move bits per byte
        assert abs(r["bits_per_byte"] - r["val_loss"] / math.log(2)) < 1e-3
        assert r["val_ppl"] == math.exp(r["val_loss"])
    rows = list(csv.DictReader(open(tmp_path / "eval" / "per_position.csv")))
    assert len(rows) == 2 * 64 and {r["position"] for r in rows} == {str(i) for i in range(1, 65)}
    assert (tmp_path / "eval" / "per_position.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "inner_loop_0.png").exists()
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())[0]["windows"] == 4


def test_generate_is_seeded_and_greedy_is_argmax(tmp_path, bundled_bytes):
    train(tmp_path / "run", bundled_bytes, "--train.steps=3", "--train.ckpt_every=3")
    model, _, data, _ = load_run_model(tmp_path / "run")
    tok = data.tokenizer
    a = generate_text(model, tok, "ROMEO:", 20, temperature=1.0, seed=3, stream=None)
    b = generate_text(model, tok, "ROMEO:", 20, temperature=1.0, seed=3, stream=None)
    assert a == b
    printed = io.StringIO()
    greedy = generate_text(model, tok, "ROMEO:", 12, temperature=0.0, stream=printed)
    assert printed.getvalue() == greedy + "\n"
    ids = torch.tensor([[tok.bos_id, *tok.encode("ROMEO:")]])
    with torch.no_grad():
        for _ in range(12):
            nxt = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
            if nxt.item() == tok.eos_id:
                break
    expected = [i for i in ids[0, 1 + len(tok.encode("ROMEO:")) :].tolist() if i != tok.eos_id]
    assert greedy == tok.decode(expected)


def test_bits_per_byte_divides_by_bytes_not_eos(tmp_path):
    """Short documents: many EOS targets among the scored tokens. They are not bytes of text."""
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": f"line {i:03d} of text"}) + "\n" for i in range(60)))
    data_dir = tmp_path / "data"
    train(tmp_path / "run", data_dir, f"--data.source={source}", "--train.steps=1", "--data.seq_len=16")
    (r,) = evaluate_run([tmp_path / "run"], tmp_path / "eval", max_windows=8, diagnostics=False)
    val = load_prepared(data_dir).tokens("val")[1 : r["windows"] * 16 + 1]
    n_bytes = int((val < 256).sum())
    assert n_bytes < r["scored_tokens"]  # some scored targets are EOS
    assert r["bits_per_byte"] == pytest.approx(r["val_loss"] * r["scored_tokens"] / n_bytes / math.log(2), rel=1e-12)


def test_untied_checkpoint_without_lm_head_is_refused(tmp_path, bundled_bytes):
    """Only a tied model may lack lm_head.weight (it is the embedding); an untied one would get a random head."""
    from safetensors.torch import load_file, save_file

    from ttt.integrity import write_manifest
    from ttt.train.config import ConfigError

    train(tmp_path / "run", bundled_bytes, "--train.steps=1", "--model.tie_word_embeddings=false")
    (ckpt,) = (tmp_path / "run" / "checkpoints").iterdir()
    state = load_file(ckpt / "model.safetensors")
    del state["lm_head.weight"]
    save_file(state, ckpt / "model.safetensors")
    write_manifest(ckpt)  # a checkpoint written that way (not damaged afterwards: the manifest would name that)
    with pytest.raises(ConfigError, match="lm_head.weight"):
        load_run_model(ckpt)


@pytest.mark.parametrize(
    "model_name, overrides",
    [
        ("ttt-linear-tiny", {}),
        ("ttt-mlp-tiny-T", {"learnable_init": False, "inner_optimizer": "momentum"}),
        ("transformer++-tiny", {}),
        ("mamba-tiny", {}),
    ],
)
def test_a_run_loads_without_random_init_to_the_same_model(tmp_path, bundled_bytes, model_name, overrides):
    """load_run_model builds the model without initialising it (the checkpoint overwrites every weight): it equals a
    model initialised as usual with the checkpoint loaded into it (non-persistent buffers included)."""
    from ttt.train import build_model, latest_checkpoint, load_checkpoint

    run = tmp_path / "run"
    options = [f"--model.{key}={json.dumps(value)}" for key, value in overrides.items()]
    train(run, bundled_bytes, "--train.steps=1", f"--model.name={model_name}", *options)
    loaded, _, data, _ = load_run_model(run)
    state, _, trainer_state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    reference = build_model(trainer_state["model_name"], data.tokenizer.vocab_size, trainer_state["model_overrides"])
    reference.load_state_dict(state, strict=False)
    reference.tie_weights()
    mine, theirs = dict(loaded.named_buffers()), dict(reference.eval().named_buffers())
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    ids = torch.randint(0, data.tokenizer.vocab_size, (2, 20))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, reference(ids).logits)
