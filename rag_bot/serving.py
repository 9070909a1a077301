"""`rag-bot serve`: one ASGI app with the HTTP API (/api/v1), the MCP server (/mcp), /metrics, /healthz,
/readyz and the Chainlit chat at /, run by uvicorn in this process.

The API's seams are built on first use (a dead database is then a 503, not a crash at start) and
warmed up in the background at start, so the first question does not pay for loading the embedder
and training the routers. Conversations go to the vector store's database through a small pool.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import psycopg
from fastapi import FastAPI
from psycopg_pool import ConnectionPool

from rag_bot.api.app import Backend, create_app
from rag_bot.api.keys import load_keys
from rag_bot.api.mcp_server import mount_mcp
from rag_bot.assistant import Services
from rag_bot.config import Settings
from rag_bot.db import store_url
from rag_bot.observability import install_request_id_logging
from rag_bot.profiles import get_profiles
from rag_bot.wiring import close_shared_components, shared_components

logger = logging.getLogger(__name__)


class ConversationPool:
    """Connections for `rag_bot.sessions`, opened on first use (the embedded server may start late)."""

    def __init__(self, settings: Settings, *, max_size: int = 4, timeout_s: float = 5.0) -> None:
        self._settings = settings
        self._max_size = max_size
        self._timeout_s = timeout_s
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._get().connection(timeout=self._timeout_s) as conn:
            yield conn

    def _get(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                pool = ConnectionPool(
                    store_url(self._settings), min_size=1, max_size=self._max_size, open=False,
                    kwargs={"autocommit": True, "connect_timeout": 5}, name="conversations",
                )
                pool.open(wait=False)
                self._pool = pool
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def build_backend(settings: Settings, pool: ConnectionPool | ConversationPool) -> Backend:
    profiles = get_profiles(settings.profiles_file)
    keys = load_keys(settings.api_keys_path, set(profiles.profiles))
    if not len(keys):
        logger.warning("No API keys in %s: the HTTP API refuses every request. Create one with "
                       "`rag-bot api-key create NAME --profile support`.", settings.api_keys_path)

    def services(profile: str) -> Services:
        return shared_components(settings).services(profile)  # type: ignore[no-any-return]

    return Backend(profiles=profiles, services=services, connection=pool.connection, keys=keys,
                   rate_per_minute=settings.api_rate_per_minute, keep_turns=settings.conversation_turns_kept,
                   sources_root=settings.documents_root)


def create_server_app(settings: Settings, *, chat: bool = True) -> FastAPI:
    """The API app, the MCP server at /mcp, and the chat mounted at / (chat=False: no chat)."""
    pool = ConversationPool(settings)
    backend = build_backend(settings, pool)
    warm_profiles = sorted({key.profile for key in backend.keys} | {settings.default_profile})

    def warm_up() -> None:
        try:
            for profile in warm_profiles:
                backend.services(profile)
            logger.info("API ready: profiles %s", ", ".join(warm_profiles))
        except Exception as exc:  # noqa: BLE001 - retried on the first request, which reports it
            logger.warning("warm-up failed (the first request will retry): %s", exc)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
        try:
            async with app.state.mcp_sessions.run():  # the MCP server's task group
                yield
        finally:
            pool.close()
            close_shared_components()

    app = create_app(backend, lifespan=lifespan)
    app.state.mcp_sessions = mount_mcp(app, backend)
    if chat:
        from rag_bot.ui.mount import mount_chat

        mount_chat(app, "/")
    return app


def run_server(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn shuts down gracefully, then re-raises the signal)."""
    import uvicorn

    install_request_id_logging()
    app = create_server_app(settings)
    # log_config=None: keep our logging (with request ids); asyncio loop, as `chainlit run` uses.
    config = uvicorn.Config(app, host=settings.ui_host, port=settings.ui_port, log_config=None, loop="asyncio")
    uvicorn.Server(config).run()
