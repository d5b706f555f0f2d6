"""Completions through a real server over loopback: greedy output equals `model.generate` for concurrent requests
that join and leave the batch at different steps (and share it), seeded sampling does not depend on batch-mates,
streaming gives the non-streaming text (n > 1 and logprobs too), the `openai` client works unchanged, and a model
folder with AOT decode packages (`ttt export`) has its decode steps padded to the packaged batch size and run there."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from .helpers import BOS, complete, metric, metric_sample, reference, shared_steps

# prompt lengths across the prefill chunk (16) and budget (24) of the shared server; different max_tokens, so rows
# leave at different steps
CASES = [(1, 9), (5, 30), (17, 4), (40, 17), (70, 11), (33, 25)]


def prompt_of(length: int, salt: int) -> list[int]:
    return [BOS] + [(37 * i + 11 * salt) % 256 for i in range(length - 1)]


def test_greedy_concurrent_requests_equal_generate(server, model):
    def one(case: tuple[int, int, int]) -> list[int]:
        i, length, max_tokens = case
        time.sleep(0.03 * i)  # staggered arrivals: rows join a running batch
        body = {"prompt": prompt_of(length, i), "max_tokens": max_tokens, "temperature": 0, "return_token_ids": True}
        return complete(server.url, **body)["choices"][0]["token_ids"]

    cases = [(i, length, max_tokens) for i, (length, max_tokens) in enumerate(CASES)]
    before = shared_steps(server.url)
    # a long request running through the whole test: the staggered ones share the batch with it (and each other)
    # however fast the machine decodes
    long = {"prompt": prompt_of(3, 99), "max_tokens": 600, "temperature": 0, "ignore_eos": True}
    with ThreadPoolExecutor(len(cases) + 1) as pool:
        running = pool.submit(complete, server.url, **long)
        got = list(pool.map(one, cases))
        assert len(running.result()["choices"][0]["text"]) > 0
    assert shared_steps(server.url) > before  # some forwards ran several of these rows together
    for (i, length, max_tokens), ids in zip(cases, got):
        assert ids == reference(model, prompt_of(length, i), max_tokens), f"prompt length {length}"


def test_text_prompt_gets_bos_and_usage(server, model, tokenizer):
    out = complete(server.url, prompt="ROMEO: what light", max_tokens=12, temperature=0, return_token_ids=True)
    ids = [BOS, *tokenizer.encode("ROMEO: what light")]
    expected = reference(model, ids, 12)
    choice = out["choices"][0]
    assert choice["token_ids"] == expected
    assert choice["text"] == tokenizer.decode(expected)
    assert choice["finish_reason"] == ("stop" if expected[-1] == 257 else "length")
    assert out["usage"] == {
        "prompt_tokens": len(ids),
        "completion_tokens": len(expected),
        "total_tokens": len(ids) + 12,
    }


def test_seeded_sampling_does_not_depend_on_batch_mates(server):
    body = {"prompt": prompt_of(23, 5), "max_tokens": 20, "temperature": 0.9, "top_p": 0.9, "top_k": 40, "seed": 7}
    body["return_token_ids"] = True
    alone = complete(server.url, **body)["choices"][0]["token_ids"]
    others = [{**body, "prompt": prompt_of(9 + 13 * k, k), "seed": k} for k in range(3)]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(complete, server.url, **b) for b in others]
        time.sleep(0.05)
        together = complete(server.url, **body)["choices"][0]["token_ids"]
        [f.result() for f in futures]
    assert together == alone
    # n = 2: choice i samples with seed + i
    both = complete(server.url, **{**body, "n": 2})["choices"]
    assert both[0]["token_ids"] == alone
    assert both[1]["token_ids"] == complete(server.url, **{**body, "seed": 8})["choices"][0]["token_ids"]
    assert both[1]["token_ids"] != alone


@pytest.mark.parametrize("stop", [None, ["e"]], ids=["no-stop", "stop"])
def test_streaming_equals_non_streaming_with_openai_client(server, stop):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    model_id = client.models.list().data[0].id
    kwargs = dict(model=model_id, prompt="To be, or not", max_tokens=40, temperature=0, stop=stop)
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    if stop:
        assert "e" not in text


def test_logprobs(server, model):
    import torch

    ids = prompt_of(12, 3)
    out = complete(server.url, prompt=ids, max_tokens=3, temperature=0, logprobs=2, return_token_ids=True)
    lp = out["choices"][0]["logprobs"]
    with torch.no_grad():
        first = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1)
    token = out["choices"][0]["token_ids"][0]
    assert lp["token_logprobs"][0] == pytest.approx(float(first[token]), abs=1e-9)
    assert len(lp["top_logprobs"][0]) <= 2 and len(lp["tokens"]) == 3


def test_models_health_and_metrics(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    models = httpx.get(server.url + "/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["tiny-served"]
    before = metric(server.url, "ttt_generated_tokens_total")
    complete(server.url, prompt="abc", max_tokens=5, temperature=0)
    assert metric(server.url, "ttt_generated_tokens_total") >= before + 1
    assert metric(server.url, "ttt_state_pool_bytes") > 0
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "ttt_time_to_first_token_seconds_bucket",
        "ttt_inter_token_latency_seconds_count",
        "ttt_requests_total",
        "ttt_queued_requests",
        "ttt_sessions_stored",
        "ttt_active_requests",
    ):
        assert name in text


def sse_chunks(url: str, body: dict) -> list[dict]:
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def test_streaming_with_n_choices_equals_non_streaming(server):
    body = {"prompt": "Once upon", "max_tokens": 15, "temperature": 0.8, "seed": 11, "n": 3, "stop": ["q"]}
    whole = complete(server.url, **body)["choices"]
    texts, reasons = ["", "", ""], [None, None, None]
    for chunk in sse_chunks(server.url, body):
        [choice] = chunk["choices"]
        texts[choice["index"]] += choice["text"]
        reasons[choice["index"]] = choice["finish_reason"] or reasons[choice["index"]]
    assert texts == [c["text"] for c in whole]
    assert reasons == [c["finish_reason"] for c in whole]


def test_streaming_logprobs_equal_non_streaming(server):
    body = {"prompt": prompt_of(14, 2), "max_tokens": 6, "temperature": 0, "logprobs": 2, "ignore_eos": True}
    whole = complete(server.url, **body)["choices"][0]["logprobs"]
    streamed = [c["choices"][0]["logprobs"] for c in sse_chunks(server.url, body) if c["choices"][0]["logprobs"]]
    assert all(len(lp["tokens"]) == 1 for lp in streamed)
    assert [t for lp in streamed for t in lp["token_logprobs"]] == whole["token_logprobs"]
    assert [t for lp in streamed for t in lp["top_logprobs"]] == whole["top_logprobs"]


@pytest.fixture(scope="module")
def packaged_server(model_dir, model, start_server, tmp_path_factory):
    """A server on a copy of the model folder with a float64 decode package for batch size 4 only: 4 slots and a
    queue of 4."""
    from ttt.models import export_decode

    folder = tmp_path_factory.mktemp("packaged") / "tiny-served"
    shutil.copytree(model_dir, folder)
    export_decode(model, folder, batch_sizes=(4,), dtypes=("float64",), log=lambda _: None)
    return start_server(None, "--max-batch", "4", "--max-queue", "4", model=folder).ready()


def test_decode_runs_the_package_padded_to_its_batch_size(packaged_server, model):
    url = packaged_server.url
    before = metric_sample(url, "ttt_decode_package_steps_total")  # (the warm-up's steps)
    prompts = [prompt_of(9, 1), prompt_of(21, 2)]
    body = {"max_tokens": 12, "temperature": 0, "return_token_ids": True}
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda p: complete(url, prompt=p, **body)["choices"][0]["token_ids"], prompts))
    assert got == [reference(model, p, 12) for p in prompts]
    # every decode step of the two rows (11 each at least, partly shared) ran the batch-4 package
    assert metric_sample(url, "ttt_decode_package_steps_total") - before >= 11


def test_a_burst_within_slots_and_queue_is_not_refused(packaged_server):
    body = {"prompt": "burst", "max_tokens": 20, "temperature": 0, "ignore_eos": True}
    with ThreadPoolExecutor(7) as pool:
        codes = list(
            pool.map(
                lambda _: httpx.post(f"{packaged_server.url}/v1/completions", json=body, timeout=60).status_code,
                range(7),
            )
        )
    assert codes == [200] * 7
