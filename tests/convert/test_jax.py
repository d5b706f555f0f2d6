"""Converting the official JAX checkpoints (tests/fixtures/jax, made with ttt-lm-jax; see its README)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ttt import TTTForCausalLM, from_official
from ttt.cli import main
from ttt.convert import CheckpointFormatError, config_from_flags, from_jax, safe_load, to_official
from ttt.convert.jax import find_checkpoint, read_metadata

DATA = Path(__file__).parent.parent / "fixtures" / "jax"
CONFIGS = ["ttt_linear_mamba", "ttt_mlp_transformer"]
CKPTS = ["ckpt_fp32_params", "ckpt_fp32_trainstate", "ckpt_bf16_params", "ckpt_bf16_trainstate"]


def run_model(out: Path, config: str):
    model = TTTForCausalLM.from_pretrained(out).eval()
    ids = torch.from_numpy(np.load(DATA / config / "input_ids.npy")).long()
    with torch.no_grad():
        return model, model(ids, output_hidden_states=True, use_cache=False)


@pytest.mark.parametrize("ckpt", CKPTS)
@pytest.mark.parametrize("config", CONFIGS)
def test_every_checkpoint_converts_to_the_jax_logits(tmp_path, config, ckpt):
    from_jax(DATA / config / ckpt, tmp_path / "out")
    model, out = run_model(tmp_path / "out", config)
    assert model.dtype == torch.float32
    reference = "logits_fp32.npy" if "fp32" in ckpt else "logits_from_bf16_ckpt.npy"
    logits = torch.from_numpy(np.load(DATA / config / reference))
    assert (out.logits - logits).abs().max().item() < 1e-4
    if "fp32" in ckpt:
        hidden = torch.from_numpy(np.load(DATA / config / "hidden_states_fp32.npy"))
        assert len(out.hidden_states) == hidden.shape[0]
        for ours, theirs in zip(out.hidden_states, hidden):
            assert (ours - theirs).abs().max().item() < 1e-4
        targets = torch.from_numpy(np.load(DATA / config / "target_ids.npy")).long()
        loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), targets.flatten())
        expected = json.loads((DATA / config / "reference.json").read_text())["eval_loss"]
        assert abs(loss.item() - expected) < 1e-5


def test_config_read_from_metadata():
    meta = read_metadata(find_checkpoint(DATA / "ttt_linear_mamba" / "ckpt_bf16_params"))
    assert meta["model_config"]["seq_modeling_block"] == "ttt_linear"
    assert meta["step"] == 1


def test_safe_unpickler_runs_nothing(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    data = safe_load(pickle.dumps({"a": Evil(), "b": [1, 2.5, "x"]}))
    assert not marker.exists()
    assert data["b"] == [1, 2.5, "x"] and data["a"]["__class__"].endswith("system")


def test_bfloat16_output_dtype(tmp_path):
    from_jax(DATA / "ttt_linear_mamba" / "ckpt_bf16_params", tmp_path / "out", dtype=torch.bfloat16)
    model = TTTForCausalLM.from_pretrained(tmp_path / "out")
    assert model.dtype == torch.bfloat16


def test_config_from_flags_matches_metadata(tmp_path):
    meta = read_metadata(find_checkpoint(DATA / "ttt_mlp_transformer" / "ckpt_fp32_params"))["model_config"]
    sizes = {k: meta[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")}
    config = config_from_flags("125m", "ttt_mlp_base", vocab_size=131, tie_word_embeddings=False, **sizes)
    from_jax(DATA / "ttt_mlp_transformer" / "ckpt_fp32_params", tmp_path / "out", config=config)
    _, out = run_model(tmp_path / "out", "ttt_mlp_transformer")
    logits = torch.from_numpy(np.load(DATA / "ttt_mlp_transformer" / "logits_fp32.npy"))
    assert (out.logits - logits).abs().max().item() < 1e-4


def test_round_trip_through_the_official_format(tmp_path):
    from_jax(DATA / "ttt_linear_mamba" / "ckpt_fp32_params", tmp_path / "ours")
    model = TTTForCausalLM.from_pretrained(tmp_path / "ours").eval()
    to_official(model, tmp_path / "official")
    from safetensors.torch import load_file

    config = json.loads((tmp_path / "official" / "config.json").read_text())
    again = from_official(config, load_file(tmp_path / "official" / "model.safetensors")).eval()
    ids = torch.randint(0, 97, (2, 30))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def copy_ckpt(tmp_path: Path, data: bytes) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "streaming_params").write_bytes(data)
    (folder / "metadata.pkl").write_bytes(
        (DATA / "ttt_linear_mamba" / "ckpt_fp32_params" / "metadata.pkl").read_bytes()
    )
    return folder


def test_bad_checkpoints_are_rejected_and_nothing_is_written(tmp_path):
    good = (DATA / "ttt_linear_mamba" / "ckpt_fp32_params" / "streaming_params").read_bytes()
    out = tmp_path / "out"
    with pytest.raises(CheckpointFormatError, match="truncated"):
        from_jax(copy_ckpt(tmp_path, good[: len(good) // 2]), out)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    (tmp_path / "ckpt").rename(tmp_path / "c1")
    with pytest.raises(CheckpointFormatError, match="not an EasyLM streaming checkpoint"):
        from_jax(copy_ckpt(tmp_path, json.dumps({"a": 1}).encode() * 3), out)
    (tmp_path / "ckpt").rename(tmp_path / "c2")
    with pytest.raises(CheckpointFormatError):
        from_jax(copy_ckpt(tmp_path, b"\x00" * 10), out)
    assert not out.exists()
    with pytest.raises(FileNotFoundError):
        from_jax(tmp_path / "nowhere", out)


def test_tree_mismatch_names_the_parameter_and_shapes(tmp_path):
    config = config_from_flags("125m", "ttt_linear", vocab_size=97, num_hidden_layers=2)
    with pytest.raises(
        ValueError,
        match=r"conv1/bias -> model.layers.0.conv.conv.bias: checkpoint shape \(64,\), "
        r"config shape \(768,\)",
    ):
        from_jax(DATA / "ttt_linear_mamba" / "ckpt_fp32_params", tmp_path / "out", config=config)
    assert not (tmp_path / "out").exists()


def test_unknown_block(tmp_path):
    with pytest.raises(ValueError, match="unknown block"):
        config_from_flags("125m", "ttt_rnn")


def test_out_dir_not_clobbered(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        from_jax(DATA / "ttt_linear_mamba" / "ckpt_fp32_params", out)
    assert (out / "keep.txt").read_text() == "mine"


def test_cli(tmp_path, capsys):
    ckpt = DATA / "ttt_mlp_transformer" / "ckpt_bf16_trainstate"
    assert main(["convert", "jax", str(ckpt), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "metadata.pkl" in printed and "peak resident memory" in printed
    assert main(["convert", "official", str(tmp_path / "out"), str(tmp_path / "official")]) == 0
    assert (tmp_path / "official" / "model.safetensors").exists()
    with pytest.raises(SystemExit, match="lacks|does not fit"):
        main(["convert", "jax", str(ckpt), str(tmp_path / "o2"), "--preset", "125m", "--block", "ttt_mlp_base"])
