"""The HTTP layer (FastAPI): OpenAI's completions wire format, the session endpoints, health and metrics.

Errors are OpenAI-shaped JSON, `{"error": {"message", "type", "param", "code"}}`, with `param` naming the field;
an unexpected error is a 500 with an id (its traceback goes to the server's log, never to the client). With API keys
every endpoint but `/health` needs `Authorization: Bearer KEY`, checked before the body is read; a body larger than
the limit is refused (413), by its Content-Length or while it is read (chunked).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .codec import SessionCorrupt
from .engine import Engine, Event, QueueFull, Row, SessionRef, Unavailable
from .metrics import Metrics
from .sampling import SamplingParams
from .schemas import CompletionRequest, SessionCreate
from .store import SESSION_ID, new_session_id, owner_of

log = logging.getLogger("ttt.serve")


class APIError(Exception):
    """An error answered as OpenAI-shaped JSON with `status`; `param` names the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "unprocessable_entity_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


def _short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to about `limit` characters (error messages do not echo a whole input back)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def error_response(status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None):
    body = {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class ServerState:
    """What the endpoints share. `engine` is None until the model is loaded and warmed up (then /health is 200)."""

    metrics: Metrics
    api_keys: list[str] = field(default_factory=list)
    engine: Engine | None = None
    model_name: str = ""
    max_tokens: int = 2048
    max_prompt_tokens: int = 65536
    load_error: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    def ready_engine(self) -> Engine:
        if self.engine is None:
            raise APIError(503, self.load_error or "the model is still loading", headers={"Retry-After": "1"})
        return self.engine


def key_owner(header: str, keys: list[str]) -> str | None:
    """The owner of a request with this Authorization header (owner_of(None) without keys), None when it has no
    valid key."""
    if not keys:
        return owner_of(None)
    scheme, _, given = header.partition(" ")
    for key in keys:
        if scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), key.encode()):
            return owner_of(key)
    return None


def _unauthorized() -> JSONResponse:
    message = "a valid API key is required: Authorization: Bearer KEY"
    return error_response(401, message, "authorization", {"WWW-Authenticate": "Bearer"})


class Gate:
    """ASGI middleware in front of every HTTP request: the API key first (401, every path but /health), then the
    body, read here whole: over `limit` bytes (by Content-Length, or counted while a chunked body arrives) it is
    refused with 413; else the application gets it as one message."""

    def __init__(self, app: ASGIApp, state: ServerState, limit: int) -> None:
        self.app, self.state, self.limit = app, state, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["path"] != "/health":
            header = headers.get(b"authorization", b"").decode("latin-1")
            if key_owner(header, self.state.api_keys) is None:
                await _unauthorized()(scope, receive, send)
                return
        too_large = error_response(413, f"the request body is larger than {self.limit} bytes", "body")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await too_large(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away while sending
            body += message.get("body", b"")
            if len(body) > self.limit:
                await too_large(scope, receive, send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            # the body once, then the connection's own messages (http.disconnect)
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict"}


class CountRequests:
    """ASGI middleware: count requests by route and status code (a plain ASGI wrapper: it leaves streaming
    responses and disconnects alone)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            endpoint = getattr(scope.get("route"), "path", "other")
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()


def _field(loc: tuple[Any, ...]) -> str:
    # pydantic's location, without "body", list indices and the members of a union ("str", "list[int]")
    parts = [p for p in loc if isinstance(p, str) and p != "body" and "[" not in p and p not in _TYPE_TAGS]
    return ".".join(parts) if parts else "body"


def create_app(state: ServerState, max_body_bytes: int = 4 << 20) -> FastAPI:
    """The FastAPI application over `state` (its engine may be set later, once the model is warm)."""
    app = FastAPI(title="ttt serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Gate, state=state, limit=max_body_bytes)
    app.add_middleware(CountRequests, metrics=state.metrics)
    metrics = state.metrics

    @app.exception_handler(Exception)
    async def unexpected(_: Request, err: Exception) -> JSONResponse:
        # a bug: the traceback goes to the log under an id, the client gets the id only
        error_id = "err_" + secrets.token_hex(6)
        log.error("unexpected error %s", error_id, exc_info=err)
        return error_response(500, f"internal server error (id {error_id}, in the server's log)")

    @app.exception_handler(APIError)
    async def api_error(_: Request, err: APIError) -> JSONResponse:
        return error_response(err.status, err.message, err.param, err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = err.errors()
        first = problems[0] if problems else {"loc": ("body",), "msg": "invalid request"}
        loc = tuple(first.get("loc", ("body",)))
        if first.get("type") == "json_invalid":
            return error_response(400, f"the body is not valid JSON: {first.get('msg')}", "body")
        name = _field(loc)
        if first.get("type") == "extra_forbidden":
            return error_response(400, f"unknown field {name!r}: this server does not accept it", name)
        if first.get("type") == "missing":
            return error_response(400, f"{name}: field required", name)
        if name == "body" and first.get("type") in ("model_attributes_type", "dict_type"):
            return error_response(400, "the body must be a JSON object", "body")
        if first.get("type") == "value_error" and name == "body":
            # a whole-request check: its message starts with the field's name
            message = str(first.get("msg", "")).removeprefix("Value error, ")
            return error_response(400, message, message.split(" ", 1)[0])
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        return error_response(400, f"{name}: {message} (got {_short(first.get('input'))})", name)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail))

    def authorize(request: Request) -> str:
        """The owner of what this request makes or reads (the key's digest); 401 without a valid key."""
        owner = key_owner(request.headers.get("authorization", ""), state.api_keys)
        if owner is None:  # (Gate has answered 401 already; kept for an app mounted without it)
            raise APIError(
                401,
                "a valid API key is required: Authorization: Bearer KEY",
                "authorization",
                {"WWW-Authenticate": "Bearer"},
            )
        return owner

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.engine is None:
            status = "error" if state.load_error else "loading"
            return JSONResponse({"status": status, "detail": state.load_error}, status_code=503)
        if state.engine.draining:  # load balancers stop sending here
            return JSONResponse({"status": "draining", "detail": "the server is shutting down"}, status_code=503)
        return JSONResponse({"status": "ok", "model": state.model_name})

    @app.get("/metrics")
    async def prometheus(_: str = Depends(authorize)) -> Response:
        data = await asyncio.to_thread(generate_latest, metrics.registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(_: str = Depends(authorize)) -> dict[str, Any]:
        state.ready_engine()
        card = {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "ttt"}
        return {"object": "list", "data": [card]}

    async def read_session(engine: Engine, owner: str, sid: str, param: str) -> SessionRef:
        if not SESSION_ID.match(sid):
            raise APIError(404, f"{param}: no session {_short(sid)}", param)
        data = await asyncio.to_thread(engine.store.get, owner, sid)
        if data is None:
            raise APIError(404, f"{param}: no session {_short(sid)}", param)
        try:
            row = await asyncio.to_thread(engine.codec.decode, data)
        except SessionCorrupt as err:
            raise APIError(422, f"{param}: session {sid!r} cannot be used: {err}", param) from None
        return SessionRef(owner, sid, row)

    @app.post("/v1/sessions")
    async def create_session(body: SessionCreate | None = None, owner: str = Depends(authorize)) -> JSONResponse:
        engine = state.ready_engine()
        source = (await read_session(engine, owner, body.from_, "from")).state if body and body.from_ else None
        row = source or engine.pool.fresh
        sid = new_session_id()
        await asyncio.to_thread(lambda: engine.store.put(owner, sid, engine.codec.encode(row)))
        return JSONResponse(_session_card(sid, row.tokens, row.nbytes()), status_code=201)

    @app.get("/v1/sessions/{sid}")
    async def get_session(sid: str, owner: str = Depends(authorize)) -> dict[str, Any]:
        ref = await read_session(state.ready_engine(), owner, sid, "session_id")
        assert ref.state is not None
        return _session_card(sid, ref.state.tokens, ref.state.nbytes())

    @app.delete("/v1/sessions/{sid}")
    async def delete_session(sid: str, owner: str = Depends(authorize)) -> dict[str, Any]:
        engine = state.ready_engine()
        if not SESSION_ID.match(sid):
            raise APIError(404, f"session_id: no session {_short(sid)}", "session_id")
        # a running request would store the session back when it ends: refuse while one holds it
        if not engine.claim_session(owner, sid):
            message = f"session_id: session {sid!r} is in use by a running request; retry after it"
            raise APIError(409, message, "session_id")
        try:
            deleted = await asyncio.to_thread(engine.store.delete, owner, sid)
        finally:
            engine.release_session(owner, sid)
        if not deleted:
            raise APIError(404, f"session_id: no session {sid!r}", "session_id")
        return {"id": sid, "object": "session", "deleted": True}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request, owner: str = Depends(authorize)) -> Response:
        engine = state.ready_engine()
        if body.model is not None and body.model != state.model_name:
            raise APIError(
                404, f"model {body.model!r} is not served here (this server serves {state.model_name!r})", "model"
            )
        if body.max_tokens > state.max_tokens:
            raise APIError(400, f"max_tokens must be in [1, {state.max_tokens}], got {body.max_tokens}", "max_tokens")
        if body.n > engine.max_batch:
            raise APIError(400, f"n must be in [1, {engine.max_batch}] (the server's --max-batch), got {body.n}", "n")
        vocab = engine.config.vocab_size
        if isinstance(body.prompt, list):
            bad = [t for t in body.prompt if not 0 <= t < vocab]
            if bad:
                raise APIError(400, f"prompt: token ids must lie in [0, {vocab}), got {_short(bad[0])}", "prompt")
        session: SessionRef | None = None
        if body.session_id is not None:
            if not engine.claim_session(owner, body.session_id):
                raise APIError(409, f"session {_short(body.session_id)} is in use by another request", "session_id")
            try:
                session = await read_session(engine, owner, body.session_id, "session_id")
            except BaseException:
                engine.release_session(owner, body.session_id)
                raise
        try:
            # tokenizing a long prompt takes a while: not on the event loop
            ids = await asyncio.to_thread(_prompt_ids, state, engine, body, session)
            rows, queue = _rows(engine, body, session, ids)
            engine.submit(rows)
        except BaseException as err:
            if session is not None:
                engine.release_session(owner, session.sid)
            if isinstance(err, QueueFull):
                raise APIError(429, f"the server is busy: {err}; retry later", None, {"Retry-After": "1"}) from None
            if isinstance(err, Unavailable):
                raise APIError(503, str(err), None, {"Retry-After": "5"}) from None
            raise
        head = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time())}
        head["model"] = state.model_name
        if body.stream:
            stream = _sse(engine, body, rows, queue, head)
            return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await _collect(engine, body, rows, queue, head, request)

    return app


def _session_card(sid: str, tokens: int, nbytes: int) -> dict[str, Any]:
    return {"id": sid, "object": "session", "tokens": tokens, "bytes": nbytes}


def _prompt_ids(state: ServerState, engine: Engine, body: CompletionRequest, session: SessionRef | None) -> list[int]:
    """The prompt's token ids (BOS first for a text prompt on a fresh state), checked for length."""
    tokenizer = engine.tokenizer
    fresh = session is None or session.state is None or session.state.tokens == 0
    if isinstance(body.prompt, str):
        ids = ([tokenizer.bos_id] if fresh else []) + tokenizer.encode(body.prompt)
    else:
        ids = list(body.prompt)
    if not ids:
        raise APIError(400, "prompt: at least one token is needed to continue a session", "prompt")
    if len(ids) > state.max_prompt_tokens:
        raise APIError(400, f"prompt: at most {state.max_prompt_tokens} tokens, got {len(ids)}", "prompt")
    return ids


def _rows(
    engine: Engine, body: CompletionRequest, session: SessionRef | None, ids: list[int]
) -> tuple[list[Row], asyncio.Queue[tuple[int, Event]]]:
    """The engine rows of a request (one per choice) and the queue their events arrive on, as (choice, event)."""
    tokenizer = engine.tokenizer
    params = SamplingParams(
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stops=tuple(body.stops),
        logprobs=body.logprobs,
        ignore_eos=body.ignore_eos,
    )
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

    def emitter(i: int):
        return lambda event: loop.call_soon_threadsafe(queue.put_nowait, (i, event))

    rows = [
        Row(
            prompt=ids,
            params=params,
            emit=emitter(i),
            tokenizer=tokenizer,
            seed=None if body.seed is None else body.seed + i,
            session=session,
        )
        for i in range(body.n)
    ]
    return rows, queue


class _Choice:
    def __init__(self, index: int) -> None:
        self.index = index
        self.text: list[str] = []
        self.ids: list[int] = []
        self.logprobs: list[dict[str, Any]] = []
        self.finish_reason: str | None = None

    def payload(self, body: CompletionRequest) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "text": "".join(self.text), "finish_reason": self.finish_reason}
        out["logprobs"] = _logprobs(self.logprobs) if body.logprobs is not None else None
        if body.return_token_ids:
            out["token_ids"] = self.ids
        return out


def _logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [e["top"] for e in entries],
        "text_offset": offsets,
    }


def _usage(rows: list[Row], generated: int) -> dict[str, int]:
    prompt = len(rows[0].prompt)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


async def _settle(event: Event) -> Event:
    """Wait for the session store of a final event; a failed store turns it into an error."""
    if event.saved is not None:
        try:
            await asyncio.wrap_future(event.saved)
        except Exception as err:
            return Event("error", status=500, message=f"the session could not be stored: {err}")
    return event


async def _collect(
    engine: Engine,
    body: CompletionRequest,
    rows: list[Row],
    queue: asyncio.Queue[tuple[int, Event]],
    head: dict[str, Any],
    request: Request,
) -> Response:
    choices = [_Choice(i) for i in range(len(rows))]
    done = 0

    async def watch() -> None:
        # the body has been read: the next message of the connection is its end (the client went away)
        while (await request.receive())["type"] != "http.disconnect":
            pass
        queue.put_nowait((-1, Event("disconnect")))

    watcher = asyncio.create_task(watch())
    try:
        while done < len(rows):
            i, event = await queue.get()
            if event.kind == "disconnect":
                for row in rows:
                    engine.cancel(row)
                return Response(status_code=499)
            choice = choices[i]
            if event.kind == "token":
                choice.text.append(event.text)
                choice.ids.append(event.token if event.token is not None else -1)
                if event.logprob is not None:
                    choice.logprobs.append(event.logprob)
                continue
            event = await _settle(event)
            if event.kind == "error":
                raise APIError(event.status, event.message)
            choice.text.append(event.text)
            choice.finish_reason = event.finish_reason
            done += 1
    finally:
        watcher.cancel()
        if done < len(rows):
            for row in rows:
                engine.cancel(row)
    generated = sum(len(c.ids) for c in choices)
    payload = {**head, "choices": [c.payload(body) for c in choices], "usage": _usage(rows, generated)}
    return JSONResponse(payload)


async def _sse(
    engine: Engine,
    body: CompletionRequest,
    rows: list[Row],
    queue: asyncio.Queue[tuple[int, Event]],
    head: dict[str, Any],
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format; the last is `data: [DONE]`. Ends the rows if the client goes."""
    done, generated = 0, 0

    def chunk(i: int, text: str, reason: str | None, event: Event | None = None) -> str:
        choice: dict[str, Any] = {"index": i, "text": text, "finish_reason": reason, "logprobs": None}
        if event is not None and event.logprob is not None:
            choice["logprobs"] = _logprobs([event.logprob])
        if body.return_token_ids:
            choice["token_ids"] = [event.token] if event is not None and event.token is not None else []
        return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"

    try:
        while done < len(rows):
            i, event = await queue.get()
            if event.kind == "token":
                generated += 1
                yield chunk(i, event.text, None, event)
                continue
            event = await _settle(event)
            if event.kind == "error":
                error = {"message": event.message, "type": "server_error", "param": None, "code": event.status}
                yield f"data: {json.dumps({'error': error})}\n\n"
                return
            done += 1
            yield chunk(i, event.text, event.finish_reason)
        if body.stream_options is not None and body.stream_options.include_usage:
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': _usage(rows, generated)})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if done < len(rows):
            for row in rows:
                engine.cancel(row)
