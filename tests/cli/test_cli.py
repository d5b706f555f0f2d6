import pytest

from ttt import __version__
from ttt.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_demo_reports_parity(capsys):
    assert main(["demo", "--preset", "ttt-mlp-tiny", "--prompt-len", "20", "--new-tokens", "5", "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert "cached tokens == recomputed tokens" in out and "tokens/s" in out and "ms/token" in out


def test_demo_bad_preset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--preset", "ttt-nope-1b"])
    assert exit_info.value.code == 2
    assert "unknown preset" in capsys.readouterr().err
