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
from rag_bot.assistant.respond import Services
from rag_bot.config import Settings
from rag_bot.db import store_url
from rag_bot.observability import install_request_id_logging
from rag_bot.profiles import get_profiles
from rag_bot.serving.guards import ASGIApp, OpsTokenGuard, ProxyHeaderGuard
from rag_bot.ui.users import refuse_demo_passwords
from rag_bot.wiring import close_shared_components, shared_components

logger = logging.getLogger(__name__)

# Pages for operators, closed by RAG_BOT_OPS_TOKEN when it is set.
OPS_PATHS = ("/metrics", "/api/v1/docs", "/api/v1/docs/", "/api/v1/openapi.json")


class ConversationPool:
    """Connections for `rag_bot.assistant.sessions`, opened on first use (the embedded server may start late)."""

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
        return shared_components(settings).services(profile)

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

        mount_chat(app, "/", cors_origins=settings.cors_origins)
    return app


def guard_app(app: ASGIApp, settings: Settings) -> ASGIApp:
    """The app behind the guards: only a trusted proxy may name the signed-in user; /metrics and the
    API docs need the operator's token when one is set."""
    guarded = app
    if settings.ops_token is not None:
        guarded = OpsTokenGuard(guarded, token=settings.ops_token.get_secret_value(), paths=OPS_PATHS)
    secret = settings.auth_proxy_secret.get_secret_value() if settings.auth_proxy_secret else None
    return ProxyHeaderGuard(guarded, user_header=settings.auth_header, trusted=settings.auth_trusted_proxies,
                            secret=secret, secret_header=settings.auth_proxy_secret_header)


def check_startup_safety(settings: Settings) -> None:
    """Refuse to serve the demo's public passwords on a reachable address (ConfigError says what to do)."""
    if settings.ui_auth == "password":
        refuse_demo_passwords(settings.users_file, host=settings.ui_host, demo=settings.demo)


def run_server(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn shuts down gracefully, then re-raises the signal)."""
    import uvicorn

    install_request_id_logging()
    check_startup_safety(settings)
    app = guard_app(create_server_app(settings), settings)
    # log_config=None: keep our logging (with request ids); asyncio loop, as `chainlit run` uses.
    config = uvicorn.Config(app, host=settings.ui_host, port=settings.ui_port, log_config=None, loop="asyncio")
    uvicorn.Server(config).run()
