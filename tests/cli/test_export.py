"""`ttt export` on a training run, then `ttt generate` decodes through the package: the same text, every step after
the prompt run by the package; bad arguments are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttt import TTTForCausalLM
from ttt.cli import main
from ttt.models import AOT_FOLDER

from ..train.helpers import train


def generated(run: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "ROMEO:", "--max-new-tokens", "12", "--temperature", "0"]) == 0
    return capsys.readouterr().out


def test_export_then_generate_uses_the_package(
    tmp_path: Path, bundled_bytes: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    train(run, bundled_bytes, "--train.steps=2")
    eager = generated(run, capsys)

    assert main(["export", str(run), "--batch-sizes", "1"]) == 0
    out = capsys.readouterr().out
    checkpoints = sorted((run / "checkpoints").iterdir())
    assert (checkpoints[-1] / AOT_FOLDER / "decode_b1_float32.pt2").is_file()
    assert f"wrote {checkpoints[-1] / AOT_FOLDER}" in out

    used: list[bool] = []
    original = TTTForCausalLM._artifact_decode

    def spy(self, *args):
        logits = original(self, *args)
        used.append(logits is not None)
        return logits

    monkeypatch.setattr(TTTForCausalLM, "_artifact_decode", spy)
    assert generated(run, capsys) == eager
    assert used == [False] + [True] * 11  # the prompt is read eagerly; the 11 single-token steps by the package


def test_export_names_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
