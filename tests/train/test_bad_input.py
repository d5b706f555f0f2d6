"""Bad input to training, generation and saved models: refused with a message naming the option, value or file
(never silently accepted, never a deep traceback), or recorded when it is legitimate (a changed option on resume)."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest
import torch

from ttt import TTTForCausalLM, get_preset
from ttt.cli import main
from ttt.integrity import DamagedFileError
from ttt.train.checkpoint import checkpoint_dirs, load_checkpoint
from ttt.train.config import OPTION_TYPES, OPTIONS, SECTIONS_IN_ORDER, ConfigError, RunConfig, load_run_config
from ttt.train.models import build_model

from .helpers import train


def test_every_numeric_option_has_a_range_and_every_option_a_meaning():
    assert typing.get_origin(OPTION_TYPES["train"]["dtype"]) is typing.Literal  # a choice, not free text
    for section in SECTIONS_IN_ORDER:
        for key, info in OPTIONS[section].items():
            assert info.description, f"{section}.{key} has no description"
            kind = OPTION_TYPES[section][key]
            if kind in (int, float):
                bounds = [m for m in info.metadata if any(getattr(m, a, None) is not None for a in ("ge", "gt"))]
                assert bounds, f"{section}.{key} has no lower bound"


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("--optim.clip=-1", "optim.clip=-1 is not valid.*> 0"),
        ("--optim.clip=0", "optim.clip=0 is not valid.*> 0"),
        ("--optim.warmup_fraction=2", "optim.warmup_fraction=2 is not valid.*<= 1"),
        ("--optim.lr=0", "optim.lr=0 is not valid"),
        ("--optim.beta2=1", "optim.beta2=1 is not valid.*< 1"),
        ("--train.keep_last=-1", "train.keep_last=-1 is not valid"),
        ("--train.dtype=fp16", "train.dtype='fp16' is not valid.*one of auto, float32, bfloat16"),
        ("--optim.ttt_base_lr_init=-0.5", "optim.ttt_base_lr_init=-0.5 is not valid"),
    ],
)
def test_out_of_range_options_are_refused_at_parse_time(override, names, capsys):
    with pytest.raises(ConfigError, match=names):
        load_run_config(None, [override])
    assert main(["train", override, "--quiet"]) == 2
    assert override[2:].split("=")[0] in capsys.readouterr().err


def test_assignment_is_checked_too():
    cfg = RunConfig()
    with pytest.raises(ValueError, match="clip"):
        cfg.optim.clip = -1.0
    assert dataclasses.asdict(cfg)["optim"]["clip"] == 1.0


def test_train_help_lists_every_option_with_default_and_range(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for section in SECTIONS_IN_ORDER:
        for key in OPTIONS[section]:
            if key != "overrides":
                assert f"--{section}.{key}" in text
    assert "--optim.clip  (default 1.0; a number > 0)" in text
    assert "0 = keep every checkpoint" in text


@pytest.mark.parametrize("name", ["transformer++-tiny", "mamba-tiny", "ttt-linear-tiny"])
def test_misspelt_model_option_is_refused_for_every_model(name):
    with pytest.raises(ConfigError, match="hiden_size"):
        build_model(name, 258, {"hiden_size": 32})


def test_out_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", f"--train.out_dir={tmp_path / 'file'}", "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_resume_with_a_changed_option_records_what_ran(tmp_path, bundled_bytes):
    out = tmp_path / "run"
    train(out, bundled_bytes, "--train.steps=4", "--train.ckpt_every=2")
    train(out, bundled_bytes, "--train.steps=6", "--train.ckpt_every=2", "--optim.lr=0.1", resume=True)
    saved = json.loads((out / "config.json").read_text())
    assert saved["optim"]["lr"] == 0.1 and saved["train"]["steps"] == 6
    (record,) = [json.loads(line) for line in (out / "config_history.jsonl").read_text().splitlines()]
    assert record == {"step": 4, "changed": {"optim.lr": [0.003, 0.1], "train.steps": [4, 6]}}
    with pytest.raises(ConfigError, match="data.text_field"):
        train(out, bundled_bytes, "--train.steps=8", "--data.text_field=body", resume=True)
    with pytest.raises(ConfigError, match="data.seq_len: 64 -> 32"):
        train(out, bundled_bytes, "--train.steps=8", "--data.seq_len=32", resume=True)


@pytest.mark.parametrize(
    ("flag", "value"), [("--temperature", "-1"), ("--top-p", "1.5"), ("--top-p", "0"), ("--top-k", "-3")]
)
def test_generate_sampling_options_out_of_range(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "no-such-run", flag, value])
    assert exit_.value.code == 2 and flag in capsys.readouterr().err


def test_generate_prompt_that_is_not_utf8(capsys):
    # what Python makes of the bytes 0xff 0xfe passed on a command line
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "no-such-run", "--prompt", b"\xff\xfe".decode("utf-8", "surrogateescape")])
    assert exit_.value.code == 2 and "--prompt is not valid UTF-8" in capsys.readouterr().err


def test_empty_batches_and_prompts_are_refused():
    model = TTTForCausalLM(get_preset("ttt-linear-tiny")).eval()
    with pytest.raises(ValueError, match="no rows"):
        model(input_ids=torch.zeros(0, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one token"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=2)
    with pytest.raises(ValueError, match="at least one token"):
        model.generate(input_ids=torch.zeros(0, 3, dtype=torch.long), max_new_tokens=2)


def flip(path, offset: int = 100, count: int = 64) -> None:
    """Invert `count` bytes of the file in place (same size: only a checksum can tell)."""
    start = min(offset, max(path.stat().st_size - count, 0))
    data = bytearray(path.read_bytes())
    data[start : start + count] = bytes(b ^ 0xFF for b in data[start : start + count])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "trainer_state.json"])
def test_checkpoint_files_are_checksummed(tmp_path, bundled_bytes, name):
    out = tmp_path / "run"
    train(out, bundled_bytes, "--train.steps=2", "--train.ckpt_every=2")
    (checkpoint,) = checkpoint_dirs(out / "checkpoints")
    load_checkpoint(checkpoint)
    flip(checkpoint / name)
    with pytest.raises(DamagedFileError, match=name):
        load_checkpoint(checkpoint)
    # what a user sees: ttt eval names the file
    assert main(["eval", str(out), "--out", str(tmp_path / "eval"), "--no-diagnostics"]) == 2


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_pretrained_folders_are_checksummed(tmp_path, bundled_bytes, name):
    out = tmp_path / "run"
    train(out, bundled_bytes, "--train.steps=2", "--train.ckpt_every=2")
    final = out / "final"
    assert (final / "checksums.json").is_file()
    TTTForCausalLM.from_pretrained(final)
    flip(final / name)
    with pytest.raises(DamagedFileError, match=name):
        TTTForCausalLM.from_pretrained(final)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_unreadable_weights_without_a_manifest_are_named(tmp_path, damage):
    TTTForCausalLM(get_preset("ttt-linear-tiny")).save_pretrained(tmp_path)
    (tmp_path / "checksums.json").unlink()
    weights = tmp_path / "model.safetensors"
    if damage == "truncate":
        with open(weights, "r+b") as fh:
            fh.truncate(1000)
    else:
        weights.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(DamagedFileError, match="model.safetensors"):
        TTTForCausalLM.from_pretrained(tmp_path)
