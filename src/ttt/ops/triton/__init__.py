"""Fused Triton kernels for TTT-Linear and TTT-MLP: the dual form over a whole sequence (forward and backward, one
launch per (sequence, head) each) and the primal decode step. Exact to `ops/dual.py` and `ops/primal.py` (the tests
compare them, in Triton's CPU interpreter in CI); selected with `ttt_implementation="triton"`. docs/triton.md.

linear.py, mlp.py (the kernels), common.py (LN, its fused L2 backward and GELU as tile helpers), function.py (the
launchers and the autograd.Function), form.py (the forms: grid layout, packing of the state, input checks).

Needs the `triton` package: a CUDA build of torch brings its own; on a CPU-only install `pip install 'ttt[triton]'`
gives the interpreter (`TRITON_INTERPRET=1`, set before triton is imported).
"""

from __future__ import annotations

try:
    import triton  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only where triton is absent
    raise ImportError(
        "ttt_implementation='triton' needs the triton package: a CUDA build of torch brings its own; "
        "on a CPU-only install: pip install 'ttt[triton]'"
    ) from error

from .form import check_supported, ttt_triton, ttt_triton_step

__all__ = ["check_supported", "ttt_triton", "ttt_triton_step"]
