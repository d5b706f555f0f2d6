"""Evaluation: perplexity / bits per byte, the per-position loss curve, and the inner-loop diagnostics (Fig. 4)."""

from .diagnostics import inner_loss_trace
from .evaluate import evaluate_run, load_run_model, per_position_loss

__all__ = ["evaluate_run", "inner_loss_trace", "load_run_model", "per_position_loss"]
