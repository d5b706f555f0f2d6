"""The ladder and long-context experiments in their seconds-long smoke configurations (what CI runs)."""

from __future__ import annotations

import json

import pytest

from ttt.experiments.ladder import ladder_rows
from ttt.experiments.long_context import octave_means


def test_ladder_rows_add_one_change_each():
    rows = ladder_rows(256)
    assert [r[0] for r in rows] == [
        "linear-attention",
        "ttt-equivalent",
        "+learnable-W0",
        "+ln-residual",
        "+mini-batch-16",
        "+learnable-eta",
        "+mamba-backbone",
    ]
    assert rows[0][2]["mini_batch_size"] == 256 and rows[0][2]["token_factor"] == "one"
    assert rows[1][2] == {**rows[0][2], "ttt_layer_type": "linear"}
    assert rows[-1][2] == rows[-2][2] and rows[-1][1] == "ttt-linear-tiny" and rows[-2][1] == "ttt-linear-tiny-T"
    assert rows[5][2]["lr_gate"] and not rows[4][2]["lr_gate"]


@pytest.mark.slow
def test_ladder_smoke_rows_one_and_two_agree(tmp_path):
    """Linear attention by its formula and TTT-Linear's Theorem-1 case train to the same loss (same seed)."""
    from ttt.experiments.ladder import main

    main(["--smoke", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "ladder.json").read_text())
    assert len(results) == 7
    assert abs(results[0]["val_loss"] - results[1]["val_loss"]) < 1e-4
    main(["--smoke", "--out", str(tmp_path)])  # finished rows are skipped


@pytest.mark.slow
def test_long_context_smoke(tmp_path):
    from ttt.experiments.long_context import main

    main(["--smoke", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["name"] for r in summary] == ["ttt-linear-tiny", "ttt-mlp-tiny", "transformer++-tiny", "mamba-tiny"]
    assert (tmp_path / "eval" / "per_position.png").exists()


def test_octave_means():
    assert octave_means([4.0, 2.0, 2.0, 1.0, 1.0]) == {"1-1": 4.0, "2-3": 2.0, "4-5": 1.0}


def test_extra_rows_modify_their_parent():
    rows = {name: model for name, _, model in ladder_rows(256, extra=True)}
    extra = rows["5b:+mini-batch-16,tf=1/(i+1)"]
    assert extra == {**rows["+mini-batch-16"], "token_factor": "harmonic"}
