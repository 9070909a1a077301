"""The HTTP API for support-desk systems: ask a question, get an answer with sources (whole or as SSE).

    POST /api/v1/ask          JSON in, JSON out
    POST /api/v1/ask/stream   Server-Sent Events: route, token..., sources, done (or error)
    GET  /api/v1/openapi.json the schema; /api/v1/docs renders it
    GET  /metrics             Prometheus text format
    GET  /healthz, /readyz    process alive; database reachable

Every request presents an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`). The key
decides the bot profile, and the profile decides what the bot may do: a key bound to the public
`support` profile only ever searches public documents and never runs SQL or charts, because
`respond()` applies the profile (audience filter in SQL, permitted intents); nothing here widens it.

Conversation state is in PostgreSQL (`rag_bot.assistant.sessions`), never in this process, so any replica
can answer the next message of any conversation.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_bot import prompts
from rag_bot.analytics.formatting import format_cell
from rag_bot.api.keys import ApiKey, KeyRing
from rag_bot.api.ratelimit import RateLimiter
from rag_bot.assistant.respond import Reply, Services
from rag_bot.assistant.sessions import DEFAULT_KEEP_TURNS, PgConversations, jsonable
from rag_bot.assistant.turn import Done, Routed, Token, TurnEvent, TurnResult, TurnRunner
from rag_bot.documents.sources import display_source
from rag_bot.errors import DatabaseUnavailable, LLMUnavailable
from rag_bot.observability import REJECTED, new_request_id, request_id_var
from rag_bot.profiles import ProfilesConfig
from rag_bot.prompts import detect_language

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


@dataclass
class Backend:
    """What the API needs from the rest of the bot; `serving.py` builds the real one, tests their own.

    Args:
        profiles: the profiles file (keys name a profile in it).
        services: profile name -> the seams for that profile (`Components.services`).
        connection: a context manager giving a PostgreSQL connection for conversations
            (`psycopg_pool.ConnectionPool.connection`).
        keys: the API keys.
        rate_per_minute: the default per-key limit.
        keep_turns: turns kept per conversation.
        sources_root: the documents folder sources are shown relative to.
    """

    profiles: ProfilesConfig
    services: Callable[[str], Services]
    connection: Callable[[], AbstractContextManager[psycopg.Connection]]
    keys: KeyRing
    rate_per_minute: int = 60
    keep_turns: int = DEFAULT_KEEP_TURNS
    sources_root: Path | None = None  # sources are shown relative to it (rag_bot.documents.sources)


# -- request and response bodies ------------------------------------------------------------------
class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000, examples=["What is the return period for a laptop?"])
    conversation_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$",
        description="Continue this conversation (e.g. your ticket id); omitted: a new one is started.",
    )
    language: Literal["ru", "en"] | None = Field(
        default=None, description="Answer in this language; omitted: the question's language."
    )


class Source(BaseModel):
    number: int = Field(description="The [n] the answer cites.")
    title: str
    source: str = Field(description="The document's path in the knowledge base (relative to its documents "
                        "folder), or its URL.")
    section: str | None = None
    page: int | None = None


class AskResponse(BaseModel):
    conversation_id: str
    request_id: str
    answer: str
    sources: list[Source]
    intent: str = Field(description="docs, sql, chart, smalltalk or out_of_scope.")
    domains: list[str]
    language: str
    sentiment: Literal["neutral", "negative", "angry"] | None = Field(
        default=None, description="Set for support questions."
    )
    escalate: bool = Field(description="The customer should be handed to a human (angry, or asked for one).")
    sql: str | None = None
    columns: list[str] | None = None
    rows: list[list[Any]] | None = None
    rows_formatted: list[list[str | None]] | None = Field(
        default=None, description="The same rows as text to show: grouped digits, dates as dates, in `language`."
    )
    chart_png_base64: str | None = None
    suggestions: list[str] = Field(
        default_factory=list,
        description="Two or three next questions the bot can answer (none when the profile turns them off).",
    )


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable kind: unauthorized, rate_limited, llm_unavailable, ...")
    message: str = Field(description="A sentence you can show to the person who asked.")
    request_id: str | None = None


class ApiError(Exception):
    """An error answered as JSON `ErrorBody` with an HTTP status."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.kind, "message": self.message, "request_id": request_id_var.get()}


def to_api_error(exc: BaseException, language: str) -> ApiError:
    """Translate a failure into what the caller sees; never driver text or a traceback."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, LLMUnavailable):
        logger.warning("LLM unavailable: %s", exc)
        return ApiError(503, "llm_unavailable", prompts.text("llm_down", language))
    if isinstance(exc, DatabaseUnavailable | psycopg.OperationalError | PoolTimeout):
        logger.warning("database unavailable: %s", exc)
        return ApiError(503, "database_unavailable", prompts.text("db_down", language))
    logger.error("unexpected error while answering", exc_info=exc)
    return ApiError(500, "internal", prompts.text("internal_error", language))


# -- request id -----------------------------------------------------------------------------------
class RequestIdMiddleware:
    """Sets the request id for everything one HTTP request does (echoed as X-Request-ID)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id(Headers(scope=scope).get("x-request-id"))
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


# -- the app --------------------------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, description="An API key from `rag-bot api-key create`.")
_header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key, in a header.")


def authorized_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    x_api_key: Annotated[str | None, Security(_header_key)],
) -> ApiKey:
    """The request's API key, within its rate limit; 401 or 429 otherwise."""
    backend: Backend = request.app.state.backend
    limiter: RateLimiter = request.app.state.limiter
    presented = credentials.credentials if credentials is not None else x_api_key
    if not presented:
        REJECTED.labels("unauthorized").inc()
        raise ApiError(401, "unauthorized", "Send an API key: `Authorization: Bearer <key>` or `X-API-Key`.",
                       {"WWW-Authenticate": "Bearer"})
    key = backend.keys.find(presented)
    if key is None:
        REJECTED.labels("unauthorized").inc()
        raise ApiError(401, "unauthorized", "This API key is not valid.", {"WWW-Authenticate": "Bearer"})
    wait_s = limiter.check(key.id, key.rate_per_minute or backend.rate_per_minute)
    if wait_s:
        REJECTED.labels("rate_limited").inc()
        raise ApiError(429, "rate_limited", f"Too many requests for this key; retry in {wait_s} s.",
                       {"Retry-After": str(wait_s)})
    return key


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or unknown API key."},
    429: {"model": ErrorBody, "description": "Rate limit of the key exceeded; see Retry-After."},
    500: {"model": ErrorBody, "description": "Unexpected error (logged with the request id)."},
    503: {"model": ErrorBody, "description": "The LLM or the database is not available."},
}


def create_app(
    backend: Backend, *, limiter: RateLimiter | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The API app. `rag_bot.serving` adds the chat UI to it; tests use it on its own."""
    app = FastAPI(
        lifespan=lifespan,
        title="rag_bot API", version="1", openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        description="Answers from the company's documents (and data, for internal profiles) for support-desk "
        "systems. Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
    )
    app.add_middleware(RequestIdMiddleware)
    app.state.backend = backend
    app.state.limiter = limiter or RateLimiter()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    runner = backend_runner(backend)

    @app.post(f"{API_PREFIX}/ask", response_model=AskResponse, responses=_ERRORS, tags=["ask"])
    async def ask(body: AskRequest, key: Annotated[ApiKey, Depends(authorized_key)]) -> AskResponse:
        """Answer one question; the whole answer at once."""
        turn = ApiTurn(runner, key, body, backend.sources_root)
        try:
            async for step in turn.events():
                if isinstance(step, Done):
                    return turn.response(step.result)
        except Exception as exc:  # noqa: BLE001 - translated into a status and a user-facing message
            raise to_api_error(exc, turn.language) from None
        raise ApiError(500, "internal", prompts.text("internal_error", turn.language))

    @app.post(
        f"{API_PREFIX}/ask/stream", tags=["ask"],
        responses={**_ERRORS, 200: {"description": (
            "text/event-stream. Events: `route` (intent, domains, conversation_id), `token` ({text}) repeated, "
            "`sources` ({sources}), `done` (the same object /ask returns). After the stream has started, a "
            "failure is an `error` event ({error, message}) and the stream ends."
        ), "content": {"text/event-stream": {}}}},
    )
    async def ask_stream(body: AskRequest, key: Annotated[ApiKey, Depends(authorized_key)]) -> EventSourceResponse:
        """Answer one question as Server-Sent Events, token by token."""
        return EventSourceResponse(_events(ApiTurn(runner, key, body, backend.sources_root)), ping=15)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        try:
            with backend.connection() as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            error = to_api_error(exc, "en")
            return JSONResponse(error.body(), status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.api_route(f"{API_PREFIX}/{{path:path}}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                   include_in_schema=False)
    def not_found(path: str) -> Response:
        # Without this, the chat UI mounted at / would answer unknown API paths with its HTML page.
        return JSONResponse({"error": "not_found", "message": f"There is no {API_PREFIX}/{path}."}, status_code=404)

    return app


def backend_runner(backend: Backend) -> TurnRunner:
    """The turn runner of the API and the MCP server: conversations in the backend's PostgreSQL."""
    return TurnRunner(backend.profiles, backend.services,
                      conversations=PgConversations(backend.connection, keep_turns=backend.keep_turns))


class ApiTurn:
    """One question through the API or MCP: the turn runner does the work; this only shapes the response."""

    def __init__(self, runner: TurnRunner, key: ApiKey, body: AskRequest, sources_root: Path | None = None,
                 channel: str = "api") -> None:
        self.runner, self.key, self.body, self.sources_root, self.channel = runner, key, body, sources_root, channel
        self.conversation_id = body.conversation_id or uuid.uuid4().hex
        # Namespaced by key: one key can never load another key's (or the chat's) conversation.
        self.stored_id = f"api:{key.id}:{self.conversation_id}"
        self.language = body.language or detect_language(body.question)

    def events(self) -> AsyncIterator[TurnEvent]:
        return self.runner.run(self.body.question, profile=self.key.profile, channel=self.channel,
                               conversation_id=self.stored_id, language=self.language)

    async def answer(self) -> TurnResult:
        """The whole turn (the JSON endpoint, MCP's `ask`)."""
        return await self.runner.answer(self.body.question, profile=self.key.profile, channel=self.channel,
                                        conversation_id=self.stored_id, language=self.language)

    def route_event(self, reply: Reply) -> dict[str, Any]:
        route = reply.route
        return {"conversation_id": self.conversation_id, "request_id": request_id_var.get(), "intent": route.intent,
                "domains": list(route.domains), "language": route.language, "sentiment": route.sentiment,
                "escalate": reply.escalate}

    def response(self, result: TurnResult) -> AskResponse:
        reply = result.reply
        return AskResponse(
            **self.route_event(reply), answer=result.text, sources=sources_of(reply, self.sources_root),
            sql=reply.sql, columns=list(reply.columns) if reply.sql else None,
            rows=[[jsonable(v) for v in row] for row in reply.rows] if reply.sql else None,
            rows_formatted=formatted_rows(reply) if reply.sql else None,
            chart_png_base64=base64.b64encode(reply.chart_png).decode("ascii") if reply.chart_png else None,
            suggestions=list(reply.suggestions),
        )


def formatted_rows(reply: Reply) -> list[list[str | None]]:
    """The rows as the chat's table shows them (rag_bot.analytics.formatting), in the reply's language."""
    def text(value: Any, column: str) -> str | None:
        shown = format_cell(value, column, reply.route.language)
        return None if shown is None else str(jsonable(shown))

    return [[text(v, c) for v, c in zip(row, reply.columns, strict=False)] for row in reply.rows]


def sources_of(reply: Reply, root: Path | None = None) -> list[Source]:
    return [Source(number=c.number, title=c.title, source=display_source(c.source, root), section=c.section or None,
                   page=c.page) for c in reply.citations]


async def _events(turn: ApiTurn) -> AsyncIterator[dict[str, str]]:
    """route, token..., sources, done; or an error event with a user-facing message."""

    def event(name: str, data: Any) -> dict[str, str]:
        return {"event": name, "data": json.dumps(data, ensure_ascii=False)}

    try:
        async for step in turn.events():
            if isinstance(step, Routed):
                yield event("route", turn.route_event(step.reply))
            elif isinstance(step, Token):
                yield event("token", {"text": step.text})
            elif isinstance(step, Done):
                sources = sources_of(step.result.reply, turn.sources_root)
                yield event("sources", {"sources": [s.model_dump() for s in sources]})
                yield event("done", turn.response(step.result).model_dump())
    except Exception as exc:  # noqa: BLE001 - the stream has started: report in-band
        error = to_api_error(exc, turn.language)
        yield event("error", {"error": error.kind, "message": error.message, "request_id": request_id_var.get()})
