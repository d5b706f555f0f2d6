"""`ttt bench coldstart`: one real cold start of the tiny model (a child process), its fields consistent with each
other, the report files, the medians and a bad folder. No timing assertions beyond order and positivity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttt.bench.coldstart import FIELDS, main, summarise, table
from ttt.cli import main as cli_main


def test_coldstart_of_the_tiny_model_reports_consistent_fields(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["bench", "coldstart", "--repeats", "1", "--steps", "2", "--prompt", "8", "--dir", str(tmp_path / "m")]
    assert cli_main([*argv, "--out", str(out)]) == 0
    for name in ("coldstart.md", "coldstart.csv", "coldstart.json", "coldstart.png"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "coldstart.json").read_text())["rows"]
    # the aot path is skipped (no packages were built), with a note naming the folder
    assert [r["path"] for r in rows] == ["eager"]
    row = rows[0]
    for key in FIELDS:
        assert row[key] > 0, key
    assert row["packages"] == 0
    assert row["ready_s"] == pytest.approx(row["python_s"] + row["import_s"] + row["load_s"])
    assert row["to_first_token_s"] == pytest.approx(row["ready_s"] + row["first_token_s"])
    assert row["to_first_token_s"] > row["ready_s"] > row["import_s"] and row["ready_s"] > row["load_s"]
    report = (out / "coldstart.md").read_text()
    assert "ttt bench coldstart" in report and "| ttt-linear-tiny | eager (0 packages) |" in report
    assert "aot:" in report and "no AOT decode packages" in report


def test_summary_takes_medians_per_path_in_run_order() -> None:
    def row(path: str, scale: float, rate: float | None) -> dict:
        fields = {key: scale for key in FIELDS} | dict(decode_ms_token=rate)
        return dict(model="m", path=path, repeat=0, packages=0, ready_s=3 * scale, to_first_token_s=4 * scale, **fields)

    rows = [row("aot", 1.0, 2.0), row("eager", 5.0, None), row("aot", 3.0, 4.0), row("aot", 2.0, 9.0)]
    summary = summarise(rows)
    assert [s["path"] for s in summary] == ["aot", "eager"]
    assert summary[0]["n"] == 3 and summary[0]["load_s"] == 2.0 and summary[0]["decode_ms_token"] == 4.0
    assert summary[1]["decode_ms_token"] is None
    assert "| m | eager (0 packages) | 5.00 |" in table(summary) and table(summary).rstrip().endswith("| - |")


def test_a_folder_without_a_model_is_named(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "config.json" in err
