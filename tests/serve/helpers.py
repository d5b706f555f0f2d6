"""Shared pieces of the server tests: the reference generation and small HTTP helpers."""

from __future__ import annotations

import re

import httpx
import torch

from ttt import TTTCache, TTTForCausalLM

EOS = 257  # the byte tokenizer's EOS
BOS = 256


@torch.no_grad()
def reference(model: TTTForCausalLM, ids: list[int], max_new_tokens: int) -> list[int]:
    """The greedy continuation `model.generate` gives for `ids` (stopping at EOS, as the server does)."""
    prompt = torch.tensor([ids])
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    return out[0, len(ids) :].tolist()


@torch.no_grad()
def greedy_ignoring_eos(model: TTTForCausalLM, ids: list[int], n: int) -> list[int]:
    """The first `n` greedy tokens after `ids`, EOS not ending them (the server's `ignore_eos`)."""
    cache = TTTCache.from_model(model, 1)
    logits = model(torch.tensor([ids]), cache=cache, use_cache=True).logits[0, -1]
    out: list[int] = []
    for _ in range(n):
        out.append(int(logits.argmax()))
        logits = model(torch.tensor([out[-1:]]), cache=cache, use_cache=True).logits[0, -1]
    return out


def complete(url: str, timeout: float = 60, headers: dict[str, str] | None = None, **body) -> dict:
    """POST /v1/completions; asserts 200 and returns the JSON."""
    response = httpx.post(f"{url}/v1/completions", json=body, timeout=timeout, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def metric(url: str, name: str, headers: dict[str, str] | None = None) -> float:
    """The value of an unlabelled sample of /metrics."""
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def metric_sample(url: str, sample: str, headers: dict[str, str] | None = None) -> float:
    """The value of one sample of /metrics, written as Prometheus prints it (labels included), 0 when absent."""
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    match = re.search(rf"^{re.escape(sample)} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def shared_steps(url: str) -> float:
    """Forwards so far that took more than one row (from the ttt_batch_rows histogram)."""
    return metric_sample(url, "ttt_batch_rows_count") - metric_sample(url, 'ttt_batch_rows_bucket{le="1.0"}')
