"""torchrun with 2 processes on gloo (DDP and FSDP2) equals 1 process with the same global batch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .helpers import SMALL, losses, train

ARGS = ["--train.steps=4", "--model.name=ttt-mlp-tiny", "--train.ckpt_every=4"]


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_processes_equal_one(tmp_path, bundled_bytes, fsdp):
    one = tmp_path / "one"
    train(one, bundled_bytes, *ARGS)
    two = tmp_path / "two"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "ttt.cli",
        "train",
        "--quiet",
        *SMALL,
        *ARGS,
        f"--train.out_dir={two}",
        f"--data.prepared_dir={bundled_bytes}",
        f"--train.fsdp={'true' if fsdp else 'false'}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = losses(one), losses(two)
    assert a.keys() == b.keys()
    assert max(abs(a[s] - b[s]) for s in a) < 1e-5
