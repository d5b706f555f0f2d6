"""`python -m ttt.bench.fast_decode` runs end to end at the tiny size (export, eager / compiled / aot and the
matrix-product packages side by side, the limits, the cold starts) and writes its table. No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ttt import TTTForCausalLM, get_preset
from ttt.bench.fast_decode import linear_flops, main


def test_linear_flops_count_every_projection_once_per_row() -> None:
    model = TTTForCausalLM(get_preset("ttt-linear-tiny"))
    params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert linear_flops(model, 3) == 2 * 3 * params


def test_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--sizes", "tiny", "--batches", "1", "--steps", "2", "--rounds", "1", "--compare-linears"]
    threads = torch.get_num_threads()
    try:
        assert main([*argv, "--dir", str(tmp_path / "models"), "--out", str(out)]) == 0
    finally:
        # main sets this process's thread count (--threads); later tests compare in-process results with children's
        torch.set_num_threads(threads)
    result = json.loads((out / "results.json").read_text())
    measured = result["rows"][0]["formats"]["float32"]["b1"]
    expected = {"eager", "compiled", "aot", "aot_matmul", "linears", "limit_ms", "compute_ms", "gemm_gflops"}
    assert expected <= set(measured) and all(measured[k] > 0 for k in expected)
    assert "aot, matmul linears" in (out / "results.md").read_text()
    assert result["rows"][0]["cold_aot"]["packages"] == 1
