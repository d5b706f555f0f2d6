"""Sessions: a conversation through a session equals one request with the whole text; a fork continues on its own;
a session survives a restart (folder store) and is shared by two server processes (Redis); a client that leaves
mid-stream leaves its session as far as it got; a non-finite state fails its own request only."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch

from ttt import TTTCache

from .helpers import BOS, complete, greedy_ignoring_eos, reference

TURNS = [[BOS, *b"First, the question."], list(b" And then?"), list(b" Finally:")]


def new_session(url: str, source: str | None = None, headers=None) -> str:
    response = httpx.post(f"{url}/v1/sessions", json={"from": source} if source else {}, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["tokens"] == (0 if source is None else response.json()["tokens"])
    return response.json()["id"]


def say(url: str, sid: str, prompt: list[int], max_tokens: int = 8) -> list[int]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "session_id": sid, "return_token_ids": True}
    return complete(url, **body)["choices"][0]["token_ids"]


def conversation_reference(model, turns: list[list[int]], max_tokens: int = 8) -> tuple[list[int], list[list[int]]]:
    """(the whole text's ids before the last answer, each turn's answer) by model.generate on the whole text."""
    history: list[int] = []
    answers = []
    for turn in turns:
        history += turn
        answers.append(reference(model, history, max_tokens))
        history += answers[-1]
    return history, answers


def test_conversation_equals_one_request(server, model):
    sid = new_session(server.url)
    got = [say(server.url, sid, turn) for turn in TURNS]
    history, answers = conversation_reference(model, TURNS)
    assert got == answers
    # the last answer, as one request with the whole text
    whole = [t for turn, ans in zip(TURNS[:-1], answers[:-1]) for t in turn + ans] + TURNS[-1]
    assert (
        complete(server.url, prompt=whole, max_tokens=8, temperature=0, return_token_ids=True)["choices"][0][
            "token_ids"
        ]
        == answers[-1]
    )
    card = httpx.get(f"{server.url}/v1/sessions/{sid}").json()
    assert card["tokens"] == len(history) and card["bytes"] > 0
    assert httpx.delete(f"{server.url}/v1/sessions/{sid}").status_code == 200
    assert httpx.get(f"{server.url}/v1/sessions/{sid}").status_code == 404


def test_text_prompts_in_a_session(server, model, tokenizer):
    sid = new_session(server.url)
    first = complete(server.url, prompt="Hello", max_tokens=6, temperature=0, session_id=sid, return_token_ids=True)
    second = complete(server.url, prompt=" there", max_tokens=6, temperature=0, session_id=sid, return_token_ids=True)
    ids = [BOS, *tokenizer.encode("Hello")]
    a1 = reference(model, ids, 6)
    assert first["choices"][0]["token_ids"] == a1
    # BOS only at the start of the session
    assert second["choices"][0]["token_ids"] == reference(model, ids + a1 + tokenizer.encode(" there"), 6)


def test_fork_continues_independently(server, model):
    a = new_session(server.url)
    first = say(server.url, a, TURNS[0])
    b = new_session(server.url, source=a)
    assert httpx.get(f"{server.url}/v1/sessions/{b}").json()["tokens"] == len(TURNS[0]) + len(first)
    on_b = say(server.url, b, list(b" Other way."))
    on_a = say(server.url, a, TURNS[1])
    base = TURNS[0] + first
    assert on_b == reference(model, base + list(b" Other way."), 8)
    assert on_a == reference(model, base + TURNS[1], 8)  # the fork's request did not touch a
    assert httpx.post(f"{server.url}/v1/sessions", json={"from": "sess_" + "x" * 24}).status_code == 404


def test_sigterm_drains_and_session_survives_restart(start_server, model, tmp_path):
    """SIGTERM mid-stream: the stream ends (cut after the grace period), new requests are refused, the process exits
    0, the session is stored; a new server on the same folder continues it. The file is a session file."""
    store = tmp_path / "store"
    first = start_server(str(store), "--grace", "1", "--max-tokens", "100000").ready()
    sid = new_session(first.url)
    answer = say(first.url, sid, TURNS[0])
    body = {"prompt": TURNS[1], "max_tokens": 100000, "temperature": 0, "session_id": sid, "stream": True}
    body["ignore_eos"] = True
    with httpx.stream("POST", f"{first.url}/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        first.terminate()
        time.sleep(0.3)
        # still listening while it drains: new work and /health get 503 (load balancers stop sending)
        refused = httpx.post(f"{first.url}/v1/completions", json={"prompt": "x"}, timeout=5)
        health = httpx.get(f"{first.url}/health", timeout=5)
        events = [line for line in lines if line]
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "service_unavailable_error"
    assert health.status_code == 503 and health.json()["status"] == "draining"
    assert events[-1] == "data: [DONE]" and '"finish_reason": "length"' in events[-2]
    assert first.proc.wait(30) == 0
    # the stored file is the project's session format, holding what the cut request read
    [path] = list(store.glob(f"*/{sid}.session"))
    cache = TTTCache.load(path, model)
    cut = cache.get_seq_length() - len(TURNS[0]) - len(answer) - len(TURNS[1])
    assert 0 < cut < 100000
    second = start_server(str(store)).ready()
    history = TURNS[0] + answer + TURNS[1] + greedy_ignoring_eos(model, TURNS[0] + answer + TURNS[1], cut)
    assert say(second.url, sid, TURNS[2]) == reference(model, history + TURNS[2], 8)


def test_redis_sessions_shared_by_two_servers(start_server, redis_url, model):
    one, two = start_server(redis_url), start_server(redis_url)
    one.ready(), two.ready()
    sid = new_session(one.url)
    got = [say(one.url, sid, TURNS[0]), say(two.url, sid, TURNS[1]), say(one.url, sid, TURNS[2])]
    assert got == conversation_reference(model, TURNS)[1]
    fork = new_session(two.url, source=sid)
    assert httpx.get(f"{one.url}/v1/sessions/{fork}").json()["tokens"] > 0
    assert httpx.delete(f"{one.url}/v1/sessions/{fork}").status_code == 200
    assert httpx.get(f"{two.url}/v1/sessions/{fork}").status_code == 404


def test_disconnect_stores_session_as_far_as_it_got(server, model):
    sid = new_session(server.url)
    prompt = TURNS[0]
    body = {
        "prompt": prompt,
        "max_tokens": 2000,
        "temperature": 0,
        "session_id": sid,
        "stream": True,
        "ignore_eos": True,
    }
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    deadline = time.monotonic() + 10
    while True:  # the session is free again once its state is stored
        card = httpx.get(f"{server.url}/v1/sessions/{sid}").json()
        if card["tokens"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    read = card["tokens"] - len(prompt)
    assert 0 <= read < 2000
    # the state holds the prompt and the first `read` greedy tokens, exactly
    greedy = greedy_ignoring_eos(model, prompt, read)
    time.sleep(0.2)
    assert say(server.url, sid, TURNS[1]) == reference(model, prompt + greedy + TURNS[1], 8)


def test_delete_while_a_request_runs_is_refused(server):
    sid = new_session(server.url)
    body = {"prompt": TURNS[0], "max_tokens": 2000, "temperature": 0, "session_id": sid, "stream": True}
    body["ignore_eos"] = True
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        refused = httpx.delete(f"{server.url}/v1/sessions/{sid}")
        assert refused.status_code == 409 and refused.json()["error"]["type"] == "conflict_error"
    deadline = time.monotonic() + 10
    while (deleted := httpx.delete(f"{server.url}/v1/sessions/{sid}")).status_code == 409:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert deleted.status_code == 200
    time.sleep(0.3)  # nothing stores it back
    assert httpx.get(f"{server.url}/v1/sessions/{sid}").status_code == 404


def test_non_finite_state_fails_its_request_only(server, model, tmp_path):
    sid = new_session(server.url)
    store = next(p for p in server_store_paths(server) if p.name == f"{sid}.session")
    cache = TTTCache.from_model(model, 1)
    for layer in cache.layers:
        layer.load_named(
            {
                n: torch.full_like(t, float("nan")) if t.is_floating_point() else t.clone()
                for n, t in layer.named_tensors().items()
            }
        )
    cache.save(store, model)
    bad = {"prompt": TURNS[1], "max_tokens": 5, "temperature": 0, "session_id": sid}
    good = {"prompt": TURNS[0], "max_tokens": 12, "temperature": 0, "return_token_ids": True}
    with ThreadPoolExecutor(2) as pool:
        ok = pool.submit(complete, server.url, **good)
        failed = httpx.post(f"{server.url}/v1/completions", json=bad, timeout=30)
        assert ok.result()["choices"][0]["token_ids"] == reference(model, TURNS[0], 12)
    assert failed.status_code == 500 and "not finite" in failed.json()["error"]["message"]
    assert complete(server.url, **good)["choices"][0]["token_ids"] == reference(model, TURNS[0], 12)


def server_store_paths(server):
    from pathlib import Path

    cmd = server.proc.args
    return list(Path(cmd[cmd.index("--session-store") + 1]).glob("*/*.session"))
