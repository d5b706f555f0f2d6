"""`ttt serve`: load the model in the background (`/health` answers 503 until it is loaded and warm), run uvicorn,
and drain on SIGTERM / SIGINT: stop admitting (new completions and `/health` answer 503, so load balancers stop
sending), let the running requests finish for the grace period (a second signal does not extend it), cut the rest,
store their sessions, stop listening, exit 0. A second SIGINT exits at once.

API keys: `--api-key` (repeatable) and the environment variable TTT_API_KEY (so a key need not be on the command
line). Binding beyond loopback without a key prints a warning."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

import uvicorn

from .app import ServerState, create_app
from .engine import Engine, Event, Row
from .loading import describe_model, load_served_model
from .metrics import Metrics
from .sampling import SamplingParams
from .store import open_store

API_KEY_ENV = "TTT_API_KEY"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeOptions:
    """The `ttt serve` command line (see `ttt serve --help`)."""

    model_dir: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 8
    max_queue: int = 64
    session_store: str = "ttt-sessions"
    session_cache_mb: int = 256
    api_keys: list[str] = field(default_factory=list)
    max_tokens: int = 2048
    max_prompt_tokens: int = 65536
    max_body_bytes: int = 4 << 20
    prefill_chunk: int = 512
    prefill_budget: int = 2048
    grace_s: float = 30.0
    threads: int = 0


class _Server(uvicorn.Server):
    """uvicorn's server whose exit signals drain the engine first, and which exits normally (0) after them."""

    def __init__(self, config: uvicorn.Config, state: ServerState, grace_s: float) -> None:
        super().__init__(config)
        self.state, self.grace_s = state, grace_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
            return
        engine = self.state.engine
        if engine is None:  # still loading: nothing to drain
            self.should_exit = True
            return
        first = not engine.draining
        engine.begin_drain(self.grace_s)
        if first:
            print(f"ttt serve: signal {sig}: draining (grace {self.grace_s:g} s)", file=sys.stderr, flush=True)
            # keep answering (503) while the rows finish; stop listening once the engine is idle
            threading.Thread(target=self._exit_when_idle, args=(engine,), name="ttt-drain", daemon=True).start()

    def _exit_when_idle(self, engine: Engine) -> None:
        deadline = time.monotonic() + self.grace_s + 5
        while not engine.idle() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.should_exit = True


def warm_up(engine: Engine) -> None:
    """One short request through the engine (prefill over a mini-batch boundary, then decode steps)."""
    finished = threading.Event()

    def emit(event: Event) -> None:
        if event.kind != "token":
            finished.set()

    prompt = [engine.tokenizer.bos_id] * (engine.config.mini_batch_size + 3)
    engine.submit([Row(prompt, SamplingParams(max_tokens=3, temperature=0.0), emit, engine.tokenizer, seed=0)])
    finished.wait()


def serve(opts: ServeOptions) -> int:
    """Run the server until a signal; returns the exit code (0 after a drain, 2 when the model cannot be loaded)."""
    started = time.monotonic()
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    try:
        store = open_store(opts.session_store, opts.session_cache_mb << 20)
    except Exception as err:  # redis unreachable, a bad URL, a path that is a file: one line, not a traceback
        print(f"ttt serve: error: session store {opts.session_store!r}: {err}", file=sys.stderr, flush=True)
        return 2
    keys = list(opts.api_keys)
    if os.environ.get(API_KEY_ENV):
        keys.append(os.environ[API_KEY_ENV])
    if not keys and opts.host not in _LOOPBACK:
        print(
            f"ttt serve: warning: listening on {opts.host} without an API key: anyone who can reach it can use it "
            f"(--api-key or {API_KEY_ENV})",
            file=sys.stderr,
            flush=True,
        )
    metrics = Metrics()
    metrics.count_sessions_with(store.count)
    state = ServerState(metrics, keys, max_tokens=opts.max_tokens, max_prompt_tokens=opts.max_prompt_tokens)
    app = create_app(state, opts.max_body_bytes)
    config = uvicorn.Config(
        app,
        host=opts.host,
        port=opts.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(opts.grace_s) + 5,
    )
    server = _Server(config, state, opts.grace_s)
    failed: list[str] = []

    def load() -> None:
        try:
            model, tokenizer, name = load_served_model(opts.model_dir)
            engine = Engine(
                model,
                tokenizer,
                store,
                metrics,
                max_batch=opts.max_batch,
                max_queue=opts.max_queue,
                prefill_chunk=opts.prefill_chunk,
                prefill_budget=opts.prefill_budget,
            )
            pool = engine.pool
            print(
                f"ttt serve: {name}: {describe_model(model)}; state pool {opts.max_batch} slots x "
                f"{pool.row_nbytes / 2**20:.3f} MiB = {pool.nbytes() / 2**20:.2f} MiB (allocated once, any length); "
                f"sessions: {store.describe()}",
                flush=True,
            )
            engine.start()
            warm_up(engine)
            state.model_name = name
            state.engine = engine
            print(
                f"ttt serve: ready on http://{opts.host}:{opts.port} in {time.monotonic() - started:.2f} s",
                flush=True,
            )
        except Exception as err:
            failed.append(f"{type(err).__name__}: {err}")
            state.load_error = f"the model could not be loaded: {err}"
            print(f"ttt serve: error: {state.load_error}", file=sys.stderr, flush=True)
            server.should_exit = True

    threading.Thread(target=load, name="ttt-load", daemon=True).start()
    server.run()
    if state.engine is not None:
        state.engine.stop()
    print("ttt serve: stopped", file=sys.stderr, flush=True)
    return 2 if failed else 0
