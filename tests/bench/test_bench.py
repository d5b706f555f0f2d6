"""`ttt bench`: FLOP formulas against counted matmuls, state bytes against the formula, the limits, the plan, bad
input, and one end-to-end smoke run of the command (child processes included). No timing assertions."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ttt.bench import models as bench_models
from ttt.bench.flops import attention_flops, forward_flops, ttt_inner_flops
from ttt.bench.report import CSV_COLUMNS
from ttt.bench.runner import run_child
from ttt.bench.spec import BenchSpec, Limits, ModelSpec, SpecError, parse_lengths, parse_models, plan
from ttt.cli import main as cli_main
from ttt.models import kv_cache_bytes, state_bytes
from ttt.ops import InnerSpec, TTTState, ttt_dual

BENCH_DIR = Path(__file__).resolve().parents[2] / "src" / "ttt" / "bench"


def inner_params(layer: str, heads: int, d: int) -> tuple[torch.Tensor, ...]:
    hidden = d if layer == "linear" else 4 * d
    params = (torch.randn(heads, d, hidden) * 0.1, torch.zeros(heads, 1, hidden))
    if layer == "mlp":
        params += (torch.randn(heads, hidden, d) * 0.1, torch.zeros(heads, 1, d))
    return params


@pytest.mark.parametrize("layer", ["linear", "mlp"])
@pytest.mark.parametrize("d,b", [(8, 4), (16, 16)], ids=["d8-b4", "d16-b16"])
def test_inner_loop_flops_equal_counted_matmuls(layer: str, d: int, b: int) -> None:
    batch, seq_len, heads = 2, 4 * b, 3
    q, k, v = (torch.randn(batch, seq_len, heads, d) for _ in range(3))
    lr, tf = torch.rand(batch, seq_len, heads), torch.rand(b)
    state = TTTState.initial(inner_params(layer, heads, d), batch)
    with FlopCounterMode(display=False) as counter:
        ttt_dual(q, k, v, lr, InnerSpec(tf, torch.ones(heads, d), torch.zeros(heads, d)), state)
    assert counter.get_total_flops() == batch * seq_len * heads * ttt_inner_flops(layer, d, b)


def test_inner_formulas_written_out() -> None:
    assert ttt_inner_flops("linear", 64, 16) == 6 * 64**2 + 4 * 16 * 64
    assert ttt_inner_flops("mlp", 64, 16) == 56 * 64**2 + 20 * 16 * 64
    with pytest.raises(ValueError, match="'generic'"):
        ttt_inner_flops("generic", 64, 16)


def test_model_forward_flops_equal_counted_matmuls() -> None:
    """Transformer backbone (no convs): the formula counts every matmul: nn.Linear, inner loop, η gate, head."""
    spec = ModelSpec("ttt-linear-T", "tiny", "dual")
    model = bench_models.build(spec)
    cfg, seq_len = model.config, 32
    ids = torch.randint(0, cfg.vocab_size, (1, seq_len))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        bench_models.prefill(model, "ttt", ids, None)
    assert counter.get_total_flops() == forward_flops(model, "ttt", seq_len)


def test_transformer_flops_are_counted_matmuls_plus_causal_attention() -> None:
    """FlopCounterMode counts the Linear matmuls (not CPU SDPA): the formula is those plus 2 C (T + 1) per token."""
    model = bench_models.build(ModelSpec("transformer++", "tiny"))
    cfg, seq_len = model.config, 32
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        bench_models.prefill(model, "transformer++", torch.randint(0, cfg.vocab_size, (1, seq_len)), None)
    attention = cfg.num_hidden_layers * seq_len * attention_flops(seq_len, cfg.hidden_size)
    assert counter.get_total_flops() == forward_flops(model, "transformer++", seq_len) - attention


@pytest.mark.parametrize("preset", ["ttt-linear", "ttt-mlp", "ttt-linear-T", "ttt-mlp-T"])
def test_measured_state_bytes_equal_formula(preset: str) -> None:
    spec = ModelSpec(preset, "tiny", "auto")
    model = bench_models.build(spec)
    cfg = model.config
    cache = bench_models.new_cache(model, "ttt", 1)
    with torch.no_grad():
        bench_models.prefill(model, "ttt", torch.randint(0, cfg.vocab_size, (1, 37)), cache)
    heads, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    per_head = d * d + d if cfg.ttt_layer_type == "linear" else 8 * d * d + 5 * d
    convs = int(cfg.pre_conv) + 2 * int(cfg.share_qk)
    # weights and gradient sums, conv states (K - 1 columns), the int64 offset
    per_layer = 4 * (2 * heads * per_head + convs * cfg.hidden_size * (cfg.conv_kernel - 1)) + 8
    assert bench_models.measured_state_bytes(cache) == per_layer * cfg.num_hidden_layers == state_bytes(cfg)


def test_kv_cache_bytes_grow_with_length() -> None:
    model = bench_models.build(ModelSpec("transformer++", "tiny"))
    cfg = model.config
    for seq_len in (16, 40):
        cache = bench_models.new_cache(model, "transformer++", 1)
        with torch.no_grad():
            bench_models.prefill(model, "transformer++", torch.randint(0, cfg.vocab_size, (1, seq_len)), cache)
        expected = kv_cache_bytes(cfg.num_hidden_layers, cfg.hidden_size, seq_len)
        assert bench_models.measured_state_bytes(cache) == expected
        synthetic = bench_models.synthetic_cache(model, "transformer++", 2, seq_len)
        assert bench_models.measured_state_bytes(synthetic) == 2 * expected


def test_mamba_state_is_fixed_size() -> None:
    model = bench_models.build(ModelSpec("mamba", "tiny"))
    cfg, sizes = model.config, []
    for seq_len in (16, 40):
        cache = bench_models.new_cache(model, "mamba", 1)
        with torch.no_grad():
            bench_models.prefill(model, "mamba", torch.randint(0, cfg.vocab_size, (1, seq_len)), cache)
        sizes.append(bench_models.measured_state_bytes(cache))
    # per layer: conv state [E, k] and SSM state [E, N], float32
    per_layer = 4 * cfg.intermediate_size * (cfg.conv_kernel + cfg.state_size)
    assert sizes == [per_layer * cfg.num_hidden_layers] * 2


def python_child(code: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r})\n{code}"]


def test_memory_limit_kills_a_growing_child() -> None:
    grow = "import time\nchunks = []\nfor _ in range(4000):\n    chunks.append(b'x' * 2**20)\n    time.sleep(0.001)"
    outcome = run_child(python_child(grow), Limits(mem_gib=0.2, time_s=60))
    assert outcome.status == "oom"
    assert outcome.max_rss > 0.15 * 2**30


def test_memory_limit_in_the_child_is_reported_as_oom() -> None:
    code = (
        "import procstat\nprocstat.limit_memory(0.25)\ntry:\n    block = b'x' * 2**30\n"
        "except MemoryError as err:\n    procstat.emit(dict(phase='failed', status='oom', error=repr(err)))"
    )
    outcome = run_child(python_child(code), Limits(mem_gib=4, time_s=60))
    assert outcome.status == "oom"


def test_time_limit_kills_a_slow_child() -> None:
    outcome = run_child(python_child("import time; time.sleep(60)"), Limits(mem_gib=4, time_s=1.0))
    assert outcome.status == "timeout"
    assert outcome.wall_s < 20


def test_child_results_are_parsed() -> None:
    code = "import procstat\nprocstat.emit(dict(phase='prefill', seconds=0.5, peak_rss=procstat.peak_rss_bytes()))"
    outcome = run_child(python_child(code), Limits())
    assert outcome.status == "ok"
    assert outcome.records[0]["seconds"] == 0.5 and outcome.records[0]["peak_rss"] > 0


def test_plan_alternates_models_and_drops_repeats_at_long_lengths() -> None:
    models = parse_models("ttt-linear,transformer++,mamba", "auto", "tiny")
    spec = BenchSpec(models, [1024, 8192], repeats=2, long_repeats=1, long_from=8192, kernels=False)
    jobs = plan(spec)
    first = [j.model.kind for j in jobs if j.repeat == 0 and j.seq_len == 1024]
    second = [j.model.kind for j in jobs if j.repeat == 1 and j.seq_len == 1024]
    assert first == ["ttt-linear", "transformer++", "mamba"]
    assert second == ["transformer++", "mamba", "ttt-linear"]
    assert sum(j.seq_len == 8192 for j in jobs) == 3  # one repeat at the long length


def test_slow_implementations_stop_at_their_cap() -> None:
    models = parse_models("ttt-linear", "auto,primal,naive", "tiny")
    spec = BenchSpec(models, [128, 512, 4096], train_lengths=[128], kernels=False, repeats=1)
    spec.impl_max_len = {"primal": 512, "naive": 64}
    lengths = {(j.kind, j.model.impl): [] for j in plan(spec)}
    for j in plan(spec):
        lengths[(j.kind, j.model.impl)].append(j.seq_len)
    assert lengths[("prefill", "auto")] == [128, 512, 4096]
    assert lengths[("prefill", "primal")] == [128, 512]
    assert lengths[("prefill", "naive")] == [64]
    assert ("train", "naive") not in lengths


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: parse_models("ttt-linear,gpt", "auto", "125m"), "'gpt'"),
        (lambda: parse_models("ttt-linear", "fast", "125m"), "'fast'"),
        (lambda: parse_models("ttt-linear", "auto", "7b"), "'7b'"),
        (lambda: parse_lengths("1k,zero"), "'zero'"),
        (lambda: parse_lengths("2k,1k"), "ascending"),
    ],
    ids=["model", "impl", "size", "length", "order"],
)
def test_bad_input_names_the_value(call, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        call()


def test_cli_rejects_unknown_model(capsys) -> None:
    assert cli_main(["bench", "--smoke", "--models", "ttt-linear,gpt2"]) == 2
    assert "'gpt2'" in capsys.readouterr().err


def test_smoke_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "ttt.cli", "bench", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("report.md", "summary.csv", "raw.jsonl", "meta.json", "prefill_tok_s.png", "decode_ms_token.png"):
        assert (out / name).is_file(), name
    with open(out / "summary.csv") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == CSV_COLUMNS
        rows = list(reader)
    got = {(r["kind"], r["model"]) for r in rows}
    models = ("ttt-linear-tiny[auto]", "transformer++-tiny")
    assert got == {(kind, m) for kind in ("prefill", "decode1", "decode", "train") for m in models}
    assert all(r["status"] == "ok" for r in rows), rows
    report = (out / "report.md").read_text()
    assert "ttt bench --smoke" in report and "GEMM" in report and "Targets" in report


def test_aot_specs_decode_through_a_package_and_skip_training(tmp_path: Path) -> None:
    """`--impl aot`: the default implementation with a `ttt export` package for the job's batch, used by decode."""
    models = parse_models("ttt-linear", "auto,aot", "tiny")
    spec = BenchSpec(models, [32], decode_lengths=[32], train_lengths=[32], kernels=False, repeats=1)
    kinds = {(j.kind, j.model.impl) for j in plan(spec)}
    assert ("train", "aot") not in kinds and {("prefill", "aot"), ("decode", "aot"), ("train", "auto")} <= kinds
    aot = next(m for m in models if m.impl == "aot")
    model = bench_models.build(aot)
    assert model.config.ttt_implementation == "auto"
    assert bench_models.attach_packages(model, aot, 2, "float32", tmp_path) > 0
    assert set(model._decode_artifacts) == {(2, torch.float32, "float32")}
    eager = bench_models.build(ModelSpec("ttt-linear", "tiny", "auto"))
    caches = []
    for m in (model, eager):
        torch.manual_seed(1)  # the same prompt for both
        caches.append(bench_models.synthetic_cache(m, "ttt", 2, 32))
    token = torch.zeros(2, 1, dtype=torch.long)
    used = []
    original = model._artifact_decode

    def spy(*args):
        logits = original(*args)
        used.append(logits is not None)
        return logits

    model._artifact_decode = spy
    with torch.no_grad():
        got, expected = (bench_models.decode_step(m, "ttt", token, c) for m, c in zip((model, eager), caches))
    assert used == [True] and (got - expected).abs().max() / expected.abs().max() < 1e-5
    assert bench_models.attach_packages(eager, ModelSpec("ttt-linear", "tiny", "auto"), 2, "float32", tmp_path) == 0
