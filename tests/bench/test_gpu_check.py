"""`python -m ttt.bench.gpu_check` runs end to end (on the CPU: quick sizes in Triton's interpreter), so the command
prepared for a GPU machine is known to work before one is lent."""

from __future__ import annotations

import json

from ttt.bench import gpu_check


def test_quick_run_checks_every_path_and_writes_its_report(tmp_path):
    assert gpu_check.main(["--quick", "--skip-compile", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["correctness"] and all(row["ok"] for row in report["correctness"])
    assert {(row["kind"], row["dtype"]) for row in report["correctness"]} == {
        (kind, dtype) for kind in ("linear", "mlp") for dtype in ("float32", "bfloat16")
    }
    assert {row["kind"] for row in report["op_speed"]} == {"linear", "mlp"}
    for row in report["op_speed"]:
        for path in ("triton fwd", "triton fwd+bwd", "torch dual (eager) fwd", "torch dual (eager) fwd+bwd"):
            value = row[f"{row['kind']}: {path}"]
            assert isinstance(value, float) and value > 0, (path, value)
    names = [row["model"].split(" (")[0] for row in report["models"]]
    assert names == ["ttt-linear", "ttt-linear", "ttt-mlp", "ttt-mlp", "transformer++"]
    assert all(isinstance(row["ms"], float) for row in report["models"]), report["models"]
    text = (tmp_path / "gpu_check.md").read_text()
    assert "## Correctness" in text and "## Op speed" in text and "## Training step" in text
