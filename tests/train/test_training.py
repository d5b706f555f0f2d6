"""Training on the bundled corpus: every model kind learns; config, schedule and errors."""

from __future__ import annotations

import math

import pytest
import torch

from ttt.data import DataError
from ttt.train.config import ConfigError, RunConfig, load_run_config
from ttt.train.models import build_model, count_params
from ttt.train.optim import InnerLRWarmup, lr_at

from .helpers import train

MODELS = ["ttt-linear-tiny", "ttt-linear-tiny-T", "ttt-mlp-tiny", "ttt-mlp-tiny-T", "transformer++-tiny", "mamba-tiny"]


@pytest.mark.parametrize("name", MODELS)
def test_loss_falls(tmp_path, bundled_bytes, name):
    result = train(tmp_path / "run", bundled_bytes, f"--model.name={name}", "--train.steps=30", "--train.ckpt_every=30")
    history = [r["loss"] for r in result["history"]]
    assert abs(history[0] - math.log(258)) < 0.5  # starts near uniform over the byte vocabulary
    assert sum(history[-5:]) / 5 < history[0] - 1.0, history


def test_baselines_match_parameter_counts():
    for size in ("tiny", "125m"):
        with torch.device("meta"):
            ttt = count_params(build_model(f"ttt-linear-{size}", 32000))
            llama = count_params(build_model(f"transformer++-{size}", 32000))
            mamba = count_params(build_model(f"mamba-{size}", 32000))
        assert abs(llama - ttt) / ttt < 0.03, (size, ttt, llama)
        assert abs(mamba - ttt) / ttt < 0.15, (size, ttt, mamba)


def test_schedule_and_inner_lr_warmup():
    cfg = RunConfig().optim
    assert lr_at(0, 100, cfg) == 0.0
    assert lr_at(5, 100, cfg) == pytest.approx(cfg.lr / 2)
    assert lr_at(10, 100, cfg) == pytest.approx(cfg.lr)
    assert lr_at(100, 100, cfg) == pytest.approx(cfg.end_lr)
    assert cfg.end_lr < lr_at(55, 100, cfg) < cfg.lr
    model = build_model("ttt-mlp-tiny", 258)
    warm = InnerLRWarmup(model, cfg, 100)
    assert warm.active and warm.targets[0] == pytest.approx(0.1)
    warm.apply(0)
    assert warm.layers[0].ttt_base_lr == pytest.approx(0.01)
    warm.apply(10)
    assert warm.layers[0].ttt_base_lr == pytest.approx(0.1)
    assert not InnerLRWarmup(build_model("ttt-linear-tiny", 258), cfg, 100).active


def test_config_file_overrides_and_resolved_copy(tmp_path, bundled_bytes):
    path = tmp_path / "run.toml"
    path.write_text("[train]\nsteps = 3\nbatch_size = 4\n[data]\nseq_len = 32\n[optim]\nlr = 0.001\n")
    cfg = load_run_config(
        path,
        [f"--train.out_dir={tmp_path / 'out'}", f"--data.prepared_dir={bundled_bytes}", "--model.mini_batch_size=8"],
    )
    assert cfg.train.steps == 3 and cfg.optim.lr == 0.001 and cfg.model.overrides == {"mini_batch_size": 8}
    from ttt.train.trainer import Trainer

    Trainer(cfg, progress=False).run()
    saved = RunConfig.from_dict(__import__("json").loads((tmp_path / "out" / "config.json").read_text()))
    assert saved == cfg


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        (["--train.stepz=3"], ConfigError, "unknown config key train.stepz"),
        (["--train.steps=three"], ConfigError, "train.steps='three' is not valid: .*integer"),
        (["--optimizer.lr=1"], ConfigError, "unknown config section"),
        (["--train.fsdp=maybe"], ConfigError, "true or false"),
    ],
)
def test_bad_config(overrides, error, match):
    with pytest.raises(error, match=match):
        load_run_config(None, overrides)


def test_bad_model_and_data(tmp_path, bundled_bytes):
    with pytest.raises(ConfigError, match="unknown preset"):
        train(tmp_path / "a", bundled_bytes, "--model.name=ttt-rnn-tiny", "--train.steps=1")
    with pytest.raises(ConfigError, match="unknown model config key"):
        train(tmp_path / "b", bundled_bytes, "--model.hidden_sizee=8", "--train.steps=1")
    with pytest.raises(DataError, match="does not exist"):
        train(tmp_path / "c", tmp_path / "c_data", "--data.source=/no/such/folder", "--train.steps=1")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError):
        train(tmp_path / "d", tmp_path / "d_data", f"--data.source={empty}", "--train.steps=1")
    # a prepared folder made with another tokenizer
    with pytest.raises(DataError):
        train(tmp_path / "e", bundled_bytes, "--data.tokenizer=bpe:300", "--train.steps=1")


def test_resume_refuses_another_model(tmp_path, bundled_bytes):
    train(tmp_path / "run", bundled_bytes, "--train.steps=2", "--train.ckpt_every=2")
    with pytest.raises(ConfigError, match="another model config"):
        train(tmp_path / "run", bundled_bytes, "--train.steps=4", "--model.name=ttt-mlp-tiny", resume=True)


def test_gradient_accumulation_equals_one_batch(tmp_path, bundled_bytes):
    whole = train(tmp_path / "a", bundled_bytes, "--train.steps=3", "--model.name=ttt-mlp-tiny")
    accum = train(
        tmp_path / "b", bundled_bytes, "--train.steps=3", "--model.name=ttt-mlp-tiny", "--train.micro_batch_size=1"
    )
    for x, y in zip(whole["history"], accum["history"]):
        assert abs(x["loss"] - y["loss"]) < 1e-5


def test_activation_checkpointing_and_remat_keep_the_losses(tmp_path, bundled_bytes):
    base = train(tmp_path / "a", bundled_bytes, "--train.steps=3", "--model.name=ttt-mlp-tiny")
    remat = train(
        tmp_path / "b",
        bundled_bytes,
        "--train.steps=3",
        "--model.name=ttt-mlp-tiny",
        "--model.gradient_checkpointing=true",
        "--model.remat_mini_batch_group_size=2",
    )
    for x, y in zip(base["history"], remat["history"]):
        assert abs(x["loss"] - y["loss"]) < 1e-6


@pytest.mark.parametrize("steps", [1, 4, 100], ids=lambda s: f"steps{s}")
def test_no_warmup_means_full_lr_from_the_first_step(steps):
    """warmup_fraction=0 (or a warmup that rounds to 0 steps) must not spend step 0 at lr 0."""
    cfg = RunConfig().optim
    cfg.warmup_fraction = 0.0
    assert lr_at(0, steps, cfg) == pytest.approx(cfg.lr)
    assert lr_at(steps - 1, steps, cfg) <= cfg.lr
    warm = InnerLRWarmup(build_model("ttt-mlp-tiny", 258), cfg, steps)
    warm.apply(0)
    assert warm.layers[0].ttt_base_lr == pytest.approx(warm.targets[0])
    # the default 10% warmup of a 4-step run rounds to 0 steps: the one-step case of the same rule
    assert lr_at(0, 4, RunConfig().optim) == pytest.approx(cfg.lr)


def test_fresh_run_refuses_an_out_dir_with_checkpoints(tmp_path, bundled_bytes):
    """Without resume, a second run into the same out_dir would mix its checkpoints and metrics with the first's."""
    train(tmp_path / "run", bundled_bytes, "--train.steps=2", "--train.ckpt_every=2")
    with pytest.raises(ConfigError, match="resume"):
        train(tmp_path / "run", bundled_bytes, "--train.steps=1")


def metric_steps(run) -> list[int]:
    import json

    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_start_from_step_0_drops_metrics_of_a_run_killed_before_its_first_checkpoint(tmp_path, bundled_bytes, resume):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 8.0}\n{"step": 3, "lo')
    train(run, bundled_bytes, "--train.steps=2", "--train.ckpt_every=2", resume=resume)
    assert metric_steps(run) == [1, 2]


def test_resume_after_a_torn_metrics_line(tmp_path, bundled_bytes):
    """A kill in the middle of a metrics write leaves half a line; resuming must not choke on it."""
    run = tmp_path / "run"
    train(run, bundled_bytes, "--train.steps=2", "--train.ckpt_every=2")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 1.0}\n{"step": 4, "lo')
    train(run, bundled_bytes, "--train.steps=3", "--train.ckpt_every=2", resume=True)
    assert metric_steps(run) == [1, 2, 3]


def _poison_steps(monkeypatch, steps: set[int]) -> None:
    """Make the loss (hence the gradient) NaN on the given 1-based optimizer steps (one micro-batch per step)."""
    import ttt.train.trainer as trainer

    original, calls = trainer.lm_loss_sum, [0]

    def poisoned(model, windows, bos_id):
        calls[0] += 1
        loss_sum, count = original(model, windows, bos_id)
        return (loss_sum * float("nan") if calls[0] in steps else loss_sum), count

    monkeypatch.setattr(trainer, "lm_loss_sum", poisoned)


def test_a_non_finite_step_is_skipped_and_the_weights_stay_finite(tmp_path, bundled_bytes, monkeypatch):
    _poison_steps(monkeypatch, {2})
    result = train(tmp_path / "run", bundled_bytes, "--train.steps=4", "--train.ckpt_every=4")
    history = result["history"]
    assert [r.get("skipped", False) for r in history] == [False, True, False, False]
    assert all(math.isfinite(r["loss"]) for r in history if not r.get("skipped"))
    from ttt.train.checkpoint import latest_checkpoint, load_checkpoint

    state, _, _ = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_too_many_non_finite_steps_stop_the_run_with_a_clear_error(tmp_path, bundled_bytes, monkeypatch):
    from ttt.train.trainer import NonFiniteError

    _poison_steps(monkeypatch, {2, 3})
    with pytest.raises(NonFiniteError, match="2 consecutive steps .*max_nonfinite_steps = 1"):
        train(tmp_path / "run", bundled_bytes, "--train.steps=4", "--train.max_nonfinite_steps=1")
    with pytest.raises(ConfigError, match="max_nonfinite_steps=-1 is not valid.*>= 0"):
        train(tmp_path / "bad", bundled_bytes, "--train.steps=1", "--train.max_nonfinite_steps=-1")
