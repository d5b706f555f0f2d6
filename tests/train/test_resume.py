"""A killed run (SIGKILL mid-training, and mid-checkpoint-write) resumes to the unbroken run's losses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttt.integrity import DamagedFileError
from ttt.train.checkpoint import checkpoint_dirs, load_checkpoint

from .helpers import SMALL, losses, train

STEPS = ["--train.steps=16", "--train.ckpt_every=4", "--model.name=ttt-mlp-tiny"]
CHILD = """
import os, signal, sys
from ttt.train import checkpoint
from ttt.train.config import load_run_config
from ttt.train.trainer import Trainer
crash_in_write = os.environ.get("CRASH_IN_CHECKPOINT_WRITE")
if crash_in_write:
    real = checkpoint.save_file
    def dying_save(tensors, path, *a, **k):
        real(tensors, path, *a, **k)
        if "step_{:08d}".format(int(crash_in_write)) in str(path):
            os.kill(os.getpid(), signal.SIGKILL)  # the model file is written, the checkpoint is not finished
    checkpoint.save_file = dying_save
Trainer(load_run_config(None, sys.argv[2:]), resume=sys.argv[1] == "1", progress=False).run()
"""


def child(out: Path, data: Path, resume: bool, env: dict | None = None) -> subprocess.Popen:
    args = [
        sys.executable,
        "-c",
        CHILD,
        "1" if resume else "0",
        *SMALL,
        *STEPS,
        f"--train.out_dir={out}",
        f"--data.prepared_dir={data}",
    ]
    return subprocess.Popen(args, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, bundled_bytes):
    out = tmp_path_factory.mktemp("unbroken")
    train(out, bundled_bytes, *STEPS)
    return losses(out)


def test_sigkill_mid_training_then_resume(tmp_path, bundled_bytes, unbroken):
    out = tmp_path / "run"
    proc = child(out, bundled_bytes, resume=False)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 10):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint_dirs(out / "checkpoints"), "a checkpoint was written before the kill"
    load_checkpoint(checkpoint_dirs(out / "checkpoints")[-1])  # the latest loads
    assert child(out, bundled_bytes, resume=True).wait() == 0
    assert losses(out) == unbroken


def test_sigkill_mid_checkpoint_write_then_resume(tmp_path, bundled_bytes, unbroken):
    out = tmp_path / "run"
    assert child(out, bundled_bytes, resume=False, env={"CRASH_IN_CHECKPOINT_WRITE": "8"}).wait() == -signal.SIGKILL
    complete = checkpoint_dirs(out / "checkpoints")
    assert [p.name for p in complete] == ["step_00000004"]  # the half-written step 8 never got its final name
    assert list((out / "checkpoints").glob(".step_00000008.*")), "the half-written folder is left under a temp name"
    load_checkpoint(complete[-1])
    assert child(out, bundled_bytes, resume=True).wait() == 0
    assert losses(out) == unbroken
    assert not list((out / "checkpoints").glob(".step_*")), "stale temporary folders are cleaned up"


def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path, bundled_bytes, unbroken):
    """Killed while writing step 12, and the newest complete checkpoint (step 8) was damaged afterwards (truncated
    model file): --resume names it, sets it aside, resumes from step 4 and reaches the unbroken run's losses."""
    out = tmp_path / "run"
    assert child(out, bundled_bytes, resume=False, env={"CRASH_IN_CHECKPOINT_WRITE": "12"}).wait() == -signal.SIGKILL
    assert [p.name for p in checkpoint_dirs(out / "checkpoints")] == ["step_00000004", "step_00000008"]
    damaged = out / "checkpoints" / "step_00000008" / "model.safetensors"
    with open(damaged, "r+b") as fh:
        fh.truncate(damaged.stat().st_size // 2)
    with pytest.raises(DamagedFileError, match="step_00000008/model.safetensors"):
        load_checkpoint(damaged.parent)
    proc = child(out, bundled_bytes, resume=True)
    assert proc.wait() == 0
    assert losses(out) == unbroken
    assert (out / "checkpoints" / "damaged_step_00000008" / "model.safetensors").is_file(), "kept for inspection"
