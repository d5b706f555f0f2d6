"""Fixtures of the server tests: a tiny float64 TTT model folder (with the byte tokenizer), `ttt serve` processes
on free loopback ports (always stopped, killed if they do not stop), and a real `redis-server`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from ttt import TTTForCausalLM, get_preset
from ttt.data import ByteTokenizer
from ttt.train.pretrained import save_pretrained_folder

START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `ttt serve` subprocess (started at once; `ready()` waits for /health to answer 200)."""

    def __init__(self, model_dir: Path, store: str, *extra: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "ttt.cli", "serve", str(model_dir), "--port", str(self.port)]
        cmd += ["--session-store", store, "--threads", "1", *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        self._ready = False

    def ready(self) -> Server:
        if self._ready:
            return self
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ttt serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ttt serve did not become ready:\n{self.log.read_text()}")
            time.sleep(0.1)
        self._ready = True
        return self

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def tokenizer() -> ByteTokenizer:
    return ByteTokenizer()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny float64 TTT-Linear folder (weights moved away from their init so that every one matters)."""
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset("ttt-linear-tiny", vocab_size=tokenizer.vocab_size)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return save_pretrained_folder(model, tokenizer, tmp_path_factory.mktemp("model") / "tiny-served")


@pytest.fixture(scope="session")
def model(model_dir) -> TTTForCausalLM:
    """The served model, loaded as the server loads it (the reference for the server's outputs)."""
    from ttt.serve.loading import load_served_model

    loaded, _, _ = load_served_model(model_dir)
    assert isinstance(loaded, TTTForCausalLM)
    return loaded


@pytest.fixture(scope="session")
def start_server(model_dir, tmp_path_factory):
    """launch_server(store=None, *extra, model=None) -> Server (not waited for), serving `model` (a folder; default
    the tiny model); every server launched is stopped at the end of the session (SIGTERM to all, then each is waited
    for, killed after a timeout)."""
    started: list[Server] = []
    logs = tmp_path_factory.mktemp("logs")

    def launch(store: str | None = None, *extra: str, model: Path | None = None) -> Server:
        store = store or str(tmp_path_factory.mktemp("sessions"))
        server = Server(model or model_dir, store, *extra, log=logs / f"server{len(started)}.log")
        started.append(server)
        return server

    try:
        yield launch
    finally:
        for server in started:
            server.terminate()
        for server in started:
            server.stop()


# the long-lived servers are launched together (their start-up, mostly imports, overlaps)
STRICT_KEYS = ("key-one", "key-two")


@pytest.fixture(scope="session")
def launched(start_server) -> dict[str, Server]:
    shared = start_server(None, "--max-batch", "4", "--prefill-chunk", "16", "--prefill-budget", "24")
    keys = [arg for key in STRICT_KEYS for arg in ("--api-key", key)]
    limits = ["--max-batch", "1", "--max-queue", "1", "--max-body-bytes", "4000", "--max-tokens", "100000"]
    strict = start_server(None, *keys, *limits)
    return {"shared": shared, "strict": strict}


@pytest.fixture(scope="session")
def server(launched) -> Server:
    """The shared server: 4 slots, small prefill chunks (a 70-token prompt takes several iterations)."""
    return launched["shared"].ready()


@pytest.fixture(scope="session")
def strict_server(launched) -> Server:
    """One slot, a queue of one, API keys STRICT_KEYS, a 4000-byte body limit."""
    return launched["strict"].ready()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A real redis-server on a free loopback port, without persistence; skipped when the binary is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server); .ci/run installs it")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
