"""The bot as an MCP server: `rag-bot serve` answers MCP clients at /mcp (streamable HTTP, stateless).

    ask               the full turn, as /api/v1/ask (routing, documents, data, charts; the conversation
                      is kept in PostgreSQL when the client passes a conversation_id)
    search_documents  the passages the profile may read, without an LLM answer
    query_data        one guarded, read-only query on the company database (a question the pipeline
                      turns into SQL, or the client's own SELECT); listed only for profiles with data access

Every request presents one of the HTTP API's keys (`Authorization: Bearer <key>` or `X-API-Key`), with
the same rate limit; the key's profile decides what the tools reach, exactly as for the HTTP API: the
audience filter on documents, and no SQL at all for a profile without the `sql` intent.

Built on the official SDK (`mcp.server.fastmcp.FastMCP`). Stateless: no MCP session lives in this
process, so any replica answers any request. The SDK's DNS-rebinding check (Host/Origin allow-lists) is
off because every request must carry an API key, which a rebinding web page does not have; keeping it on
would refuse every request that arrives through a reverse proxy under the company's host name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from fastapi import FastAPI
from fastapi.security import HTTPAuthorizationCredentials
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import Tool as MCPTool
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rag_bot.api.app import (
    ApiError,
    ApiTurn,
    AskRequest,
    AskResponse,
    Backend,
    Source,
    authorized_key,
    backend_runner,
    to_api_error,
)
from rag_bot.api.keys import ApiKey
from rag_bot.assistant.sessions import jsonable
from rag_bot.documents.sources import display_source
from rag_bot.observability import observe_error
from rag_bot.prompts import detect_language

logger = logging.getLogger(__name__)
T = TypeVar("T")

MCP_PATH = "/mcp"
DATA_TOOLS = frozenset({"query_data"})
_KEY_STATE = "rag_bot_api_key"


class Passage(Source):
    """A source with the passage the bot would answer from."""

    passage: str
    domain: str


class DataResult(BaseModel):
    sql: str | None = Field(description="The query that ran (with the LIMIT the guard applied).")
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = Field(description="More rows exist than were returned (the row cap).")
    summary: str = Field(description="The bot's plain-language answer (for a question), or empty.")


# -- authentication: the HTTP API's keys and limits, in front of the SDK's handler -----------------
class _KeyAuth:
    """Let a request through to the MCP handler only with a valid key within its rate limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        presented = request.headers.get("x-api-key")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
        try:
            credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=bearer) if bearer else None
            key = authorized_key(request, credentials, presented)
        except ApiError as error:
            await JSONResponse(error.body(), status_code=error.status, headers=error.headers)(scope, receive, send)
            return
        scope.setdefault("state", {})[_KEY_STATE] = key
        await self.app(scope, receive, send)


def _key(ctx: Context[Any, Any, Any]) -> ApiKey:
    request = ctx.request_context.request
    key = request.scope.get("state", {}).get(_KEY_STATE) if isinstance(request, Request) else None
    if not isinstance(key, ApiKey):  # only reachable if the route were mounted without _KeyAuth
        raise ToolError("This MCP endpoint needs an API key (Authorization: Bearer <key>).")
    return key


# -- the server ------------------------------------------------------------------------------------
class BotMCP(FastMCP):
    """FastMCP whose tool list depends on the calling key's profile (no data tools without data access)."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(
            name="rag_bot",
            instructions="Answers questions about the company from its documents (with sources) and, for "
            "internal profiles, from its database. Ask in Russian or English.",
            stateless_http=True,
            streamable_http_path=MCP_PATH,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            log_level="WARNING",
        )
        self.backend = backend

    def data_access(self, key: ApiKey) -> bool:
        return "sql" in self.backend.profiles.profile(key.profile).intents

    async def list_tools(self) -> list[MCPTool]:
        tools = await super().list_tools()
        key = _key(self.get_context())
        return tools if self.data_access(key) else [t for t in tools if t.name not in DATA_TOOLS]


def create_mcp_server(backend: Backend) -> BotMCP:
    """The MCP server over the API's backend (profiles, seams per profile, conversations, keys)."""
    server = BotMCP(backend)
    runner = backend_runner(backend)  # the same turn runner as the chat and the HTTP API

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    async def ask(
        question: str, ctx: Context[Any, Any, Any], conversation_id: str | None = None,
        language: Literal["ru", "en"] | None = None,
    ) -> AskResponse:
        """Ask the company's assistant one question, as a person would in the chat.

        The answer cites its sources; data questions (internal profiles) also return the SQL and the rows.
        Pass the returned conversation_id to continue the conversation ("and for last year?").
        """
        try:
            body = AskRequest(question=question, conversation_id=conversation_id, language=language)
        except ValueError as exc:
            raise ToolError(f"Invalid arguments: {exc}") from None
        turn = ApiTurn(runner, _key(ctx), body, backend.sources_root, channel="mcp")
        try:
            return turn.response(await turn.answer())
        except Exception as exc:  # noqa: BLE001 - worded like the HTTP API's errors (counted by the runner)
            raise ToolError(to_api_error(exc, turn.language).message) from None

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    async def search_documents(query: str, ctx: Context[Any, Any, Any], top_k: int = 5) -> list[Passage]:
        """Find the passages of the company documents this key may read (no generated answer)."""
        from rag_bot.documents.retrieval import pack_context, search_chunks

        key = _key(ctx)
        if not query.strip():
            raise ToolError("The query is empty: pass the words or the question to search for.")
        top_k = max(1, min(top_k, 20))
        profile = backend.profiles.profile(key.profile)

        def search() -> list[Passage]:
            services = backend.services(key.profile)
            hits = search_chunks(query, store=services.store, embedder=services.embedder, audience=profile.audience,
                                 domains=list(profile.domains), top_k=top_k, reranker=services.reranker)
            citations = pack_context(hits, services.budget_tokens * 2)
            return [Passage(number=c.number, title=c.title, source=display_source(c.source, backend.sources_root),
                            section=c.section or None,
                            page=c.page, passage=c.passage, domain=c.domain) for c in citations]

        return await _guarded(search, detect_language(query))

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    async def query_data(
        ctx: Context[Any, Any, Any], question: str | None = None, sql: str | None = None,
        language: Literal["ru", "en"] | None = None,
    ) -> DataResult:
        """Query the company database read-only: a `question` in words, or your own `sql` (one SELECT).

        Only profiles with data access have this tool. The SQL passes the bot's guard (one read-only
        SELECT on the company tables, a LIMIT) and runs as a read-only role with a statement timeout.
        """
        key = _key(ctx)
        lang = language or detect_language(question or "")
        if not server.data_access(key):
            raise ToolError(f"The profile '{key.profile}' of this key has no access to the company data; "
                            "use `ask` or `search_documents`.")
        if (question is None) == (sql is None) or not (question or sql or "").strip():
            raise ToolError("Pass exactly one of `question` (in words) or `sql` (one SELECT statement).")
        return await _guarded(lambda: _query(backend, key, question, sql, lang), lang)

    return server


def _query(backend: Backend, key: ApiKey, question: str | None, sql: str | None, language: str) -> DataResult:
    from rag_bot.analytics.pipeline import answer_analytics
    from rag_bot.analytics.sql_guard import QueryRejected, validate_sql
    from rag_bot.analytics.sql_runner import SqlExecutionError

    services = backend.services(key.profile)
    if services.runner is None:
        raise ToolError("No company database is connected to this server.")
    if question is not None:
        data = answer_analytics(question, llm=services.llm, store=services.store, embedder=services.embedder,
                                runner=services.runner, language=language, today=services.today)
        if data.status != "ok":
            raise ToolError(data.text)
        return DataResult(sql=data.sql, columns=list(data.columns), rows=_rows(data.rows), row_count=data.row_count,
                          truncated=data.truncated, summary=data.text)
    assert sql is not None
    try:
        query = validate_sql(sql, allowed_tables=services.runner.table_names(), language=language)
        result = services.runner.run(query, language=language)
    except (QueryRejected, SqlExecutionError) as exc:
        raise ToolError(str(exc)) from None
    return DataResult(sql=query.sql, columns=list(result.columns), rows=_rows(result.rows),
                      row_count=result.row_count, truncated=result.truncated, summary="")


def _rows(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    return [[jsonable(v) for v in row] for row in rows]


async def _guarded(work: Callable[[], T], language: str) -> T:
    """Run blocking work off the event loop; failures become a tool error a person can read."""
    try:
        return await run_in_threadpool(work)
    except ToolError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated like the HTTP API's errors, never driver text
        error = to_api_error(exc, language)
        observe_error(error.kind)
        raise ToolError(error.message) from None


def mount_mcp(app: FastAPI, backend: Backend) -> StreamableHTTPSessionManager:
    """Serve MCP at /mcp on `app`; the caller runs the returned manager (`async with manager.run()`)."""
    server = create_mcp_server(backend)
    handler = server.streamable_http_app()  # its own route is MCP_PATH; its lifespan is the caller's
    # A Route (not a Mount): /mcp itself, no redirect to /mcp/, ahead of the chat mounted at /.
    app.router.routes.insert(0, Route(MCP_PATH, endpoint=_KeyAuth(handler), methods=["GET", "POST", "DELETE"]))
    return server.session_manager
