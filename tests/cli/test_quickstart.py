"""The quickstart job runs to the end, and a second run on the same folder (everything already trained) too."""

from __future__ import annotations

from ttt.quickstart import quickstart


def test_quickstart_reruns_on_a_finished_folder(tmp_path, capsys):
    first = quickstart(str(tmp_path / "qs"), steps=2, seq_len=32, batch_size=2)
    again = quickstart(str(tmp_path / "qs"), steps=2, seq_len=32, batch_size=2)
    assert [r["val_loss"] for r in again["eval"]] == [r["val_loss"] for r in first["eval"]]
    assert "already trained" in capsys.readouterr().out
