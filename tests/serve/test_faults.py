"""Bad input gets a 4xx naming the field and nothing is computed; API keys (checked before the body is read), the
body limit (chunked bodies too), the bounded queue (429), clients that disconnect (streaming or not: the slot is
freed), an unexpected error (JSON 500 with an id, no traceback) and a session store that cannot be opened."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from .conftest import STRICT_KEYS, free_port
from .helpers import BOS, complete, metric, reference

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
    ({"prompt": "x", "temperature": "0.5"}, 400, "temperature"),
    ({"prompt": "x", "stream": "yes"}, 400, "stream"),
    ({"prompt": "x", "top_p": "1"}, 400, "top_p"),
    ({"prompt": "x", "ignore_eos": 1}, 400, "ignore_eos"),
    ({"prompt": 5}, 400, "prompt"),
    ({"prompt": "x", "temperature": 2.5}, 400, "temperature"),
    ({"prompt": "x", "seed": -1}, 400, "seed"),
    ({"prompt": "x", "seed": 2**64}, 400, "seed"),
    ({"prompt": "x", "seed": 2**63 - 1, "n": 2}, 400, "seed"),
]


@pytest.mark.parametrize("body,status,field", BAD, ids=[f for _, _, f in BAD])
def test_bad_input_names_the_field(server, body, status, field):
    before = metric(server.url, "ttt_prompt_tokens_total")
    response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=10)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == field and field.split(".")[0] in error["message"]
    assert metric(server.url, "ttt_prompt_tokens_total") == before  # nothing was computed


def test_numbers_accept_ints_and_the_largest_seed(server):
    out = complete(server.url, prompt="x", max_tokens=2, temperature=1, top_p=1, seed=2**63 - 2, n=2)
    assert len(out["choices"]) == 2


def test_tiny_temperature_is_greedy(server, model):
    ids = [BOS, *b"To be, or not"]
    out = complete(server.url, prompt=ids, max_tokens=8, temperature=1e-310, return_token_ids=True)
    assert out["choices"][0]["token_ids"] == reference(model, ids, 8)


def test_nan_temperature_and_long_inputs_are_refused_briefly(server):
    raw = b'{"prompt": "x", "temperature": NaN}'
    response = httpx.post(f"{server.url}/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "temperature"
    response = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "max_tokens": "m" * 100000})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "max_tokens" and len(error["message"]) < 300
    assert error["type"] == "invalid_request_error"


def test_unexpected_error_is_json_with_an_id():
    from fastapi.testclient import TestClient

    from ttt.serve.app import ServerState, create_app
    from ttt.serve.metrics import Metrics

    app = create_app(ServerState(Metrics()))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("an internal detail")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error" and "err_" in error["message"]
    assert "internal detail" not in response.text and "Traceback" not in response.text


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


def _chunked_body():
    # no Content-Length: httpx sends it chunked, so the limit is found while reading
    yield b'{"prompt": "'
    for _ in range(10):
        yield b"x" * 600
    yield b'", "max_tokens": 1}'


def test_chunked_body_over_the_limit_gets_413_and_a_bad_key_401_first(strict_server):
    url = f"{strict_server.url}/v1/completions"
    good = {"Authorization": f"Bearer {STRICT_KEYS[0]}", "content-type": "application/json"}
    response = httpx.post(url, content=_chunked_body(), headers=good)
    assert response.status_code == 413 and "4000" in response.json()["error"]["message"], response.text
    bad = {"Authorization": "Bearer nope", "content-type": "application/json"}
    response = httpx.post(url, content=_chunked_body(), headers=bad)
    assert response.status_code == 401, response.text
    response = httpx.post(url, json={"prompt": "x" * 5000}, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401, response.text


def test_non_streaming_disconnect_frees_the_slot(strict_server):
    url, headers = strict_server.url, {"Authorization": f"Bearer {STRICT_KEYS[0]}"}
    body = {"prompt": "abc", "max_tokens": 100000, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after 1 s and closes the connection
        httpx.post(f"{url}/v1/completions", json=body, headers=headers, timeout=httpx.Timeout(10, read=1.0))
    deadline = time.monotonic() + 3
    while metric(url, "ttt_active_requests", headers) > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metric(url, "ttt_active_requests", headers) == 0
    assert complete(url, headers=headers, prompt="x", max_tokens=3)["usage"]["completion_tokens"] >= 1


def test_unreachable_redis_is_one_line_and_exit_2(model_dir):
    store = f"redis://127.0.0.1:{free_port()}/0"
    cmd = [sys.executable, "-m", "ttt.cli", "serve", str(model_dir), "--port", str(free_port()), "--session-store"]
    done = subprocess.run([*cmd, store], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("ttt serve")]
    assert line.startswith("ttt serve: error: session store") and store in line


def test_disk_store_folder_is_made_at_the_first_write(tmp_path):
    from ttt.serve.store import DiskStore

    store = DiskStore(tmp_path / "sessions")
    assert not (tmp_path / "sessions").exists()
    assert store.count() == 0 and store.get("public", "sess_" + "a" * 24) is None
    store.put("public", "sess_" + "a" * 24, b"data")
    assert store.count() == 1 and store.get("public", "sess_" + "a" * 24) == b"data"


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
