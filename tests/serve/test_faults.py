"""Bad input gets a 4xx naming the field and nothing is computed; API keys, the body limit, the bounded queue (429)
and a client that disconnects (its slot is freed)."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import STRICT_KEYS
from .helpers import complete, metric

BAD = [
    ({"prompt": "x", "temprature": 0.5}, 400, "temprature"),
    ({"max_tokens": 4}, 400, "prompt"),
    ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": 10**6}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
    ({"prompt": "x", "temperature": -0.1}, 400, "temperature"),
    ({"prompt": "x", "top_p": 0}, 400, "top_p"),
    ({"prompt": "x", "top_p": 1.5}, 400, "top_p"),
    ({"prompt": "x", "top_k": -1}, 400, "top_k"),
    ({"prompt": [1, 2, 258]}, 400, "prompt"),
    ({"prompt": [-1]}, 400, "prompt"),
    ({"prompt": [1.5]}, 400, "prompt"),
    ({"prompt": "x", "n": 99}, 400, "n"),
    ({"prompt": "x", "logprobs": 9}, 400, "logprobs"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"prompt": "x", "echo": True}, 400, "echo"),
    ({"prompt": "x", "session_id": "sess_" + "a" * 24}, 404, "session_id"),
    ({"prompt": "x", "session_id": "../../etc/passwd"}, 404, "session_id"),
    ({"prompt": "x", "model": "gpt-4"}, 404, "model"),
]


@pytest.mark.parametrize("body,status,field", BAD, ids=[f for _, _, f in BAD])
def test_bad_input_names_the_field(server, body, status, field):
    before = metric(server.url, "ttt_prompt_tokens_total")
    response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=10)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == field and field.split(".")[0] in error["message"]
    assert metric(server.url, "ttt_prompt_tokens_total") == before  # nothing was computed


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""], ids=["malformed", "not-an-object", "empty"])
def test_malformed_body(server, raw):
    response = httpx.post(
        f"{server.url}/v1/completions", content=raw, headers={"content-type": "application/json"}, timeout=10
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "body", response.text


def test_api_keys_and_session_owners(strict_server):
    url = strict_server.url
    one, two = ({"Authorization": f"Bearer {key}"} for key in STRICT_KEYS)
    assert httpx.get(f"{url}/health").status_code == 200  # no key needed
    for path in ("/v1/models", "/metrics"):
        assert httpx.get(url + path).status_code == 401
        assert httpx.get(url + path, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(url + path, headers=one).status_code == 200
    assert httpx.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 1}).status_code == 401
    sid = httpx.post(f"{url}/v1/sessions", json={}, headers=one).json()["id"]
    assert httpx.get(f"{url}/v1/sessions/{sid}", headers=one).status_code == 200
    # another key does not see it, cannot use, fork or delete it
    assert httpx.get(f"{url}/v1/sessions/{sid}", headers=two).status_code == 404
    body = {"prompt": "x", "max_tokens": 1, "session_id": sid}
    assert httpx.post(f"{url}/v1/completions", json=body, headers=two).status_code == 404
    assert httpx.post(f"{url}/v1/sessions", json={"from": sid}, headers=two).status_code == 404
    assert httpx.delete(f"{url}/v1/sessions/{sid}", headers=two).status_code == 404
    assert complete(url, headers=one, **body)["usage"]["completion_tokens"] == 1


def test_body_size_limit(strict_server):
    headers = {"Authorization": f"Bearer {STRICT_KEYS[0]}"}
    body = {"prompt": "x" * 5000, "max_tokens": 1}
    response = httpx.post(f"{strict_server.url}/v1/completions", json=body, headers=headers)
    assert response.status_code == 413 and "4000" in response.json()["error"]["message"]


def _stream(url: str, headers: dict[str, str], client: httpx.Client):
    body = {"prompt": "abc", "max_tokens": 100000, "temperature": 0, "stream": True, "ignore_eos": True}
    return client.stream("POST", f"{url}/v1/completions", json=body, headers=headers, timeout=30)


def test_queue_full_gets_429_and_disconnect_frees_the_slot(strict_server):
    url, headers = strict_server.url, {"Authorization": f"Bearer {STRICT_KEYS[0]}"}
    with httpx.Client() as a, httpx.Client() as b:
        with _stream(url, headers, a) as running:  # holds the one slot
            lines = running.iter_lines()  # (kept: dropping the iterator closes the connection)
            assert next(lines).startswith("data: ")
            with _stream(url, headers, b) as waiting:  # the one place in the queue
                deadline = time.monotonic() + 5
                while metric(url, "ttt_queued_requests", headers) < 1 and time.monotonic() < deadline:
                    time.sleep(0.02)
                refused = httpx.post(f"{url}/v1/completions", json={"prompt": "x"}, headers=headers)
                assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
                waiting.close()
            running.close()  # the client goes away mid-stream
        # its slot (and the waiting request's place) are freed within a step
        deadline = time.monotonic() + 5
        while metric(url, "ttt_active_requests", headers) > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert metric(url, "ttt_active_requests", headers) == 0
        assert metric(url, "ttt_queued_requests", headers) == 0
    assert complete(url, headers=headers, prompt="x", max_tokens=3)["usage"]["completion_tokens"] >= 1
