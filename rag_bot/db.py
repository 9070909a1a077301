"""PostgreSQL URLs and connections: the store's, the admin's, a role's; readiness checks.

Starting the embedded server is rag_bot.stack.postgres's job; this module only connects.
"""

from __future__ import annotations

import logging
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import psycopg
from pgvector.psycopg import register_vector
from psycopg.conninfo import conninfo_to_dict

from rag_bot.config import Settings
from rag_bot.errors import DatabaseUnavailable
from rag_bot.stack.postgres import start_embedded

logger = logging.getLogger(__name__)


def with_database(url: str, database: str) -> str:
    """Return `url` pointing at another database on the same server (query string kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database)))


def ensure_database(admin_url: str, database: str) -> None:
    """Create `database` if it does not exist (CREATE DATABASE cannot run inside a transaction)."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{_identifier(database)}"')


def _identifier(name: str) -> str:
    # Identifiers cannot be passed as query parameters; validate before interpolating.
    import re

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise DatabaseUnavailable(f"'{name}' is not a valid database name (letters, digits, _).")
    return name


def store_url(settings: Settings) -> str:
    """URL of the vector store's database: the configured one, or the embedded server's."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    admin = start_embedded(settings.pg_data_dir)
    ensure_database(admin, settings.store_database)
    return with_database(admin, settings.store_database)


def admin_url(settings: Settings) -> str:
    """URL with rights to create databases: the embedded server's `postgres`, or the configured one."""
    if settings.database_url is not None:
        return with_database(settings.database_url.get_secret_value(), "postgres")
    return start_embedded(settings.pg_data_dir)


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection with pgvector's types registered; DB errors become a user-facing message."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"PostgreSQL is not reachable ({_redact(url)}): {str(exc).strip().splitlines()[0]}. "
            "Start the embedded server with `rag-bot db start`, or set RAG_BOT_DATABASE_URL."
        ) from exc
    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        # The extension is created by the store's migration; register after it exists.
        pass
    return conn


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def readonly_url(admin_url: str, db_name: str, role: str, password: str | None = None) -> str:
    """The admin URL with the read-only role's credentials and another database: what the SQL runner connects as."""
    params = conninfo_to_dict(plain_url(admin_url))
    host = str(params.pop("host", "") or "")
    port = str(params.pop("port", "") or "")
    for key in ("user", "password", "dbname"):
        params.pop(key, None)
    userinfo = quote(role, safe="") + (":" + quote(password, safe="") if password else "")
    netloc = userinfo + "@"
    query = dict(sorted((k, str(v)) for k, v in params.items()))
    if host.startswith("/") or "," in host:
        query["host"] = host  # a unix socket directory cannot sit in the authority part
        if port:
            query["port"] = port
    else:
        netloc += host + (f":{port}" if port else "")
    return f"postgresql://{netloc}/{quote(db_name, safe='')}" + (f"?{urlencode(query)}" if query else "")


def plain_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url
