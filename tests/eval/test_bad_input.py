"""`ttt eval` on bad arguments: a clear error naming the option or path, and no output folder left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

import ttt.eval.evaluate as evaluate_module
from ttt.cli import main
from ttt.eval import evaluate_run

from ..train.helpers import train


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, bundled_bytes: Path) -> Path:
    """A one-step tiny run (read-only for these tests)."""
    folder = tmp_path_factory.mktemp("eval_bad_input") / "run"
    train(folder, bundled_bytes, "--train.steps=1")
    return folder


@pytest.mark.parametrize("max_windows", [0, -2])
def test_max_windows_below_one_is_refused(
    tmp_path: Path, run: Path, max_windows: int, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    with pytest.raises(ValueError, match=rf"max_windows must be an integer >= 1 .*got {max_windows}"):
        evaluate_run([run], out, max_windows=max_windows)
    assert main(["eval", str(run), "--max-windows", str(max_windows), "--out", str(out)]) == 2
    assert (
        f"ttt eval: error: max_windows must be an integer >= 1 (the validation windows to score), got {max_windows}"
        in (capsys.readouterr().err)
    )
    assert not out.exists()


def test_out_that_is_a_file_is_named(tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    with pytest.raises(FileExistsError, match=r"'.*results\.txt' exists as a file"):
        evaluate_run([run], out, max_windows=1)
    assert main(["eval", str(run), "--out", str(out)]) == 2
    assert f"ttt eval: error: the output folder {str(out)!r} exists as a file" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    with pytest.raises(FileExistsError, match=r"'.*results\.txt/sub' is inside '.*results\.txt', a file"):
        evaluate_run([run], out / "sub", max_windows=1)


def test_missing_run_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new" / "eval"
    with pytest.raises(FileNotFoundError, match="nowhere is neither a checkpoint folder nor a run folder"):
        evaluate_run([tmp_path / "nowhere"], out)
    assert main(["eval", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_failure_while_evaluating_removes_the_folder_it_made(
    tmp_path: Path, run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path):
        raise RuntimeError("boom")

    monkeypatch.setattr(evaluate_module, "load_run_model", broken)
    with pytest.raises(RuntimeError, match="boom"):
        evaluate_run([run], tmp_path / "new" / "eval", max_windows=1)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        evaluate_run([run], tmp_path / "mine", max_windows=1)
    assert (tmp_path / "mine").is_dir()  # the caller's folder stays


def test_labels_must_match_paths(tmp_path: Path, run: Path) -> None:
    with pytest.raises(ValueError, match="label has 2 names for 1 paths"):
        evaluate_run([run], tmp_path / "eval", label=["a", "b"])
    assert not (tmp_path / "eval").exists()
