"""The FastAPI application: OpenAI-compatible chat completions, the model list, health, the page.

    POST /v1/chat/completions   OpenAI chat format; "stream": true answers with server-sent events
    GET  /v1/models             the one served model
    GET  /health                status and queue counts
    GET  /                      the web chat page

Every refusal is a 4xx with OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``.
With API keys configured, every ``/v1/*`` request needs ``Authorization: Bearer KEY`` (401 otherwise).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mm_core.errors import MMError
from mm_serve import schemas
from mm_serve.auth import APIKeyMiddleware
from mm_serve.chat_model import ChatModel, Generation, Reply
from mm_serve.conversation import ChatCall, to_chat_call
from mm_serve.images import ImageLimits, load_image
from mm_serve.queue import GenerationQueue, Job, QueueFull
from mm_serve.schemas import APIError, ChatCompletionRequest

log = logging.getLogger(__name__)

#: The page may load nothing from elsewhere; images the user attaches are data: URLs.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "img-src data: blob:; connect-src 'self'; form-action 'none'; base-uri 'none'")
DISCONNECT_POLL_S = 0.25
DRAIN_BYTES = 16 * 2**20


@dataclass(frozen=True)
class ServerSettings:
    """Limits of one server (``mmrun serve`` options)."""

    max_body_bytes: int = 20 * 2**20
    images: ImageLimits = field(default_factory=ImageLimits)
    max_waiting: int = 128
    max_new_tokens: int = 1024  # the most a request may ask for
    default_max_new_tokens: int = 256  # when a request names no max_tokens
    max_batch_size: int = 16  # requests generated in one call (models with chat_batch)
    batch_wait_s: float = 0.01  # how long a batch waits for more requests to arrive
    api_keys: tuple[str, ...] = ()  # none: no authentication


def create_app(chat_model: ChatModel, settings: ServerSettings | None = None) -> FastAPI:
    """The application serving ``chat_model``; its generation thread runs while the app runs."""
    settings = settings or ServerSettings()
    run_batch = None
    if chat_model.batches:
        def run_batch(jobs: list[Job], on_texts: list) -> list[Reply]:
            return chat_model.reply_batch([job.payload for job in jobs], on_texts, [job.stopped for job in jobs])
    queue = GenerationQueue(settings.max_waiting, run_batch, settings.max_batch_size, settings.batch_wait_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue.start()
        try:
            yield
        finally:
            queue.stop()

    app = FastAPI(title="mm serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.queue = queue
    app.state.chat_model = chat_model
    if settings.api_keys:
        app.add_middleware(APIKeyMiddleware, keys=settings.api_keys)
    _add_error_handlers(app)
    _add_page_and_info_routes(app, chat_model, queue)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _complete(request, chat_model, queue, settings)

    return app


def _add_page_and_info_routes(app: FastAPI, chat_model: ChatModel, queue: GenerationQueue) -> None:
    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        html = resources.files("mm_serve").joinpath("page.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": chat_model.name, "queue": queue.stats()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return schemas.model_list(chat_model.name, chat_model.created)


async def _complete(request: Request, chat_model: ChatModel, queue: GenerationQueue,
                    settings: ServerSettings) -> Response:
    """One ``POST /v1/chat/completions``: validate, queue the ``chat`` call, answer whole or streamed."""
    body = await _read_body(request, settings.max_body_bytes)
    chat_request = _parse_request(body)
    if chat_request.model != chat_model.name:
        raise APIError(404, f"The model '{chat_request.model}' does not exist; this server serves "
                       f"'{chat_model.name}' (GET /v1/models)", code="model_not_found", param="model")
    call = to_chat_call(chat_request.messages, chat_model.image_mark)
    generation = _generation(chat_request, settings)
    _check_image_count(call, chat_model, settings)
    images = await run_in_threadpool(
        lambda: [load_image(url, settings.images, param) for url, param in call.image_urls])
    try:
        job = queue.submit(lambda on_text: chat_model.reply(call, images, generation, on_text),
                           chat_model.batch_key(generation), (call, images, generation))
    except QueueFull as exc:
        raise APIError(429, f"the server is busy: {exc}; retry later", code="queue_full") from exc
    try:
        first = await _next_event(job, request)
    except BaseException:
        queue.cancel(job)
        raise
    if first is None:  # the client left while waiting
        queue.cancel(job)
        return Response(status_code=499)
    if first[0] == "error":
        raise _api_error(first[1])
    completion_id = schemas.completion_id()
    if chat_request.stream:
        include_usage = bool(chat_request.stream_options and chat_request.stream_options.include_usage)
        events = _sse_events(queue, job, first, completion_id, chat_model.name, include_usage)
        # the background task also runs when the client left before the first event was sent
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                                 background=BackgroundTask(queue.cancel, job))
    reply = await _collect(queue, job, first, request)
    if reply is None:
        return Response(status_code=499)
    return JSONResponse(schemas.completion(completion_id, chat_model.name, reply.text, reply.finish_reason,
                                           reply.prompt_tokens, reply.completion_tokens))


# -- request parsing ---------------------------------------------------------------------------
async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 past ``limit``. An oversized body is still read (and dropped) up to
    DRAIN_BYTES more, so that the client finishes sending and reads the 413 instead of
    failing with a broken pipe; beyond that the connection is given up."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + DRAIN_BYTES:
        raise _body_too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > limit + DRAIN_BYTES:
            break
    if size > limit:
        raise _body_too_large(size, limit)
    return b"".join(chunks)


def _body_too_large(size: int, limit: int) -> APIError:
    return APIError(413, f"the request body has {size} bytes or more, more than the server's limit of {limit}",
                    code="request_too_large")


def _parse_request(body: bytes) -> ChatCompletionRequest:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise APIError(400, f"invalid request: {param}: {first['msg']}" + (
            f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""),
            code="invalid_request", param=param) from exc


def _generation(request: ChatCompletionRequest, settings: ServerSettings) -> Generation:
    limit = request.token_limit or min(settings.default_max_new_tokens, settings.max_new_tokens)
    if limit > settings.max_new_tokens:
        raise APIError(400, f"max_tokens={limit} is more than this server allows ({settings.max_new_tokens})",
                       code="max_tokens_too_large", param="max_tokens")
    return Generation(limit, request.temperature, request.top_p, request.seed)


def _check_image_count(call: ChatCall, chat_model: ChatModel, settings: ServerSettings) -> None:
    allowed = settings.images.max_images
    if chat_model.max_images is not None:
        allowed = min(allowed, int(chat_model.max_images))
    if len(call.image_urls) > allowed:
        raise APIError(400, f"the conversation has {len(call.image_urls)} images; this server takes at most "
                       f"{allowed} per request", code="too_many_images", param="messages")


# -- answering ---------------------------------------------------------------------------------
async def _next_event(job: Job, request: Request) -> tuple[str, Any] | None:
    """The job's next event, or ``None`` once the client has disconnected."""
    getter = asyncio.ensure_future(job.next_event())
    try:
        while True:
            done, _ = await asyncio.wait({getter}, timeout=DISCONNECT_POLL_S)
            if done:
                return getter.result()
            if await request.is_disconnected():
                return None
    finally:
        if not getter.done():
            getter.cancel()


async def _collect(queue: GenerationQueue, job: Job, event: tuple[str, Any], request: Request) -> Reply | None:
    while event[0] == "text":
        next_event = await _next_event(job, request)
        if next_event is None:
            queue.cancel(job)
            return None
        event = next_event
    if event[0] == "error":
        raise _api_error(event[1])
    return event[1]


async def _sse_events(queue: GenerationQueue, job: Job, event: tuple[str, Any], completion_id: str,
                      model: str, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events of one streamed completion, OpenAI's chunk layout, ``[DONE]`` last.
    Starlette cancels this generator when the client disconnects; ``finally`` frees the slot."""
    finished = False  # the job's last event was sent
    try:
        yield _sse(schemas.chunk(completion_id, model, {"role": "assistant", "content": ""}))
        while True:
            kind, value = event
            if kind == "text":
                yield _sse(schemas.chunk(completion_id, model, {"content": value}))
            elif kind == "done":
                finished = True
                yield _sse(schemas.chunk(completion_id, model, {}, value.finish_reason))
                if include_usage:
                    counts = schemas.usage(value.prompt_tokens, value.completion_tokens)
                    yield _sse(schemas.chunk(completion_id, model, None, usage_counts=counts))
                yield "data: [DONE]\n\n"
                return
            else:
                finished = True
                yield _sse(_api_error(value).body())  # the status line is sent: the error goes in the stream
                return
            event = await job.next_event()
    finally:
        if not finished:
            queue.cancel(job)


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _api_error(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, MMError):  # the model refused this input (e.g. image marks vs images)
        return APIError(400, str(exc), code="invalid_input")
    log.error("generation failed", exc_info=exc)
    return APIError(500, f"the model failed: {type(exc).__name__}: {exc}", code="generation_failed")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = APIError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed", exc_info=exc)
        return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}").body(), status_code=500)
