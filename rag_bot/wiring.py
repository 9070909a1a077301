"""Build the real components from Settings, once, for the CLI, the chat UI, the API and the MCP server."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import numpy as np

from rag_bot.config import Settings
from rag_bot.db import admin_url, readonly_url, store_url
from rag_bot.embeddings import Embedder, build_embedder
from rag_bot.profiles import LLMSettings
from rag_bot.store import VectorStore

if TYPE_CHECKING:
    # The openai package takes half a second to import: `rag-bot ingest`, which builds only the
    # store, does not pay for it.
    from rag_bot.analytics.sql_runner import PostgresSqlRunner
    from rag_bot.assistant.respond import Services
    from rag_bot.assistant.routing import Relevance
    from rag_bot.documents.reranking import HttpReranker
    from rag_bot.llm.openai_compat import OpenAICompatClient
    from rag_bot.profiles import Profile, ProfilesConfig
    from sandbox import SubprocessSandbox

logger = logging.getLogger(__name__)


@dataclass
class Components:
    settings: Settings
    store: VectorStore
    embedder: Embedder
    llm: OpenAICompatClient
    _services: dict[str, Services] = field(default_factory=dict)
    _runner: PostgresSqlRunner | None = None
    _sandbox: SubprocessSandbox | None = None
    _reranker: HttpReranker | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def profiles(self) -> ProfilesConfig:
        from rag_bot.profiles import get_profiles

        return get_profiles(self.settings.profiles_file)

    def services(self, profile_name: str) -> Services:
        """The seams for one bot profile (its router is trained once and kept); thread-safe."""
        with self._lock:
            return self._services_for(profile_name)

    def _services_for(self, profile_name: str) -> Services:
        if profile_name not in self._services:
            from rag_bot.assistant.respond import Services
            from rag_bot.assistant.routing import Router
            from rag_bot.observability import MeteredLLM

            config = self.profiles()
            profile = config.profile(profile_name)
            data_allowed = profile.data_access
            # Every LLM call of every channel (router, SQL, charts, answers) is counted in /metrics.
            llm = MeteredLLM(build_llm(self.settings, profile.llm) if profile.llm.overrides else self.llm)
            self._services[profile_name] = Services(
                llm=llm,
                store=self.store,
                embedder=self.embedder,
                router=Router(config, profile, self.embedder, llm=llm,
                              relevance=document_relevance(self.store, profile)),
                runner=self.sql_runner() if data_allowed else None,
                sandbox=self.sandbox() if "chart" in profile.intents else None,
                top_k=self.settings.top_k,
                budget_tokens=self.settings.context_budget_tokens,
                today=analytics_today(self.settings),
                reranker=self.reranker(),
            )
        return self._services[profile_name]

    def reranker(self) -> HttpReranker | None:
        """The cross-encoder reranker when one is configured (shared by every profile), else None."""
        if self._reranker is None and self.settings.reranker_base_url:
            from rag_bot.documents.reranking import HttpReranker

            self._reranker = HttpReranker(self.settings.reranker_base_url, self.settings.reranker_model,
                                          timeout_s=self.settings.llm_timeout_s)
        return self._reranker

    def sql_runner(self) -> PostgresSqlRunner | None:
        """The read-only runner on the company database (None when none is configured)."""
        if self._runner is None:
            url = company_readonly_url(self.settings)
            if url is None:
                return None
            from rag_bot.analytics.sql_runner import PostgresSqlRunner

            self._runner = PostgresSqlRunner(
                url, statement_timeout_ms=self.settings.sql_statement_timeout_ms, row_cap=self.settings.sql_row_cap,
                max_cell_bytes=self.settings.sql_max_cell_bytes, max_result_bytes=self.settings.sql_max_result_bytes,
            )
        return self._runner

    def sandbox(self) -> SubprocessSandbox:
        if self._sandbox is None:
            from sandbox import SubprocessSandbox

            self._sandbox = SubprocessSandbox(pool_size=self.settings.sandbox_pool_size,
                                              allow_weak_isolation=self.settings.sandbox_allow_weak_isolation)
        return self._sandbox

    def close(self) -> None:
        self.store.close()
        if self._runner is not None:
            self._runner.close()
        if self._sandbox is not None:
            self._sandbox.close()
        if self._reranker is not None:
            self._reranker.close()


def company_readonly_url(settings: Settings) -> str | None:
    """The company database as the read-only role: configured, or the embedded demo company's."""
    if settings.company_database_url is not None:
        return settings.company_database_url.get_secret_value()
    return readonly_url(admin_url(settings), settings.company_database, settings.company_readonly_role)


def document_relevance(store: VectorStore, profile: Profile) -> Relevance:
    """The router's evidence: how close the nearest document the profile may read is to a message."""
    from rag_bot.documents.retrieval import AUDIENCES_FOR

    def relevance(embedding: np.ndarray) -> float:
        return store.nearest_similarity(embedding, audiences=AUDIENCES_FOR[profile.audience], domains=profile.domains)

    return relevance


def analytics_today(settings: Settings) -> date | None:
    """The "today" of relative dates: configured; on the demo, the last day of its data; else None."""
    if settings.analytics_today is not None or settings.company_database_url is not None:
        return settings.analytics_today
    from rag_bot.demo import END  # a constant: the package's face imports no generator

    return END


def build_store(settings: Settings, embedder: Embedder) -> VectorStore:
    store = VectorStore(store_url(settings), embedder_name=embedder.name, dim=embedder.dim)
    store.migrate()
    return store


def build_llm(settings: Settings, profile_llm: LLMSettings | None = None) -> OpenAICompatClient:
    """The LLM client; a profile's `llm:` settings override the server's (a LoRA adapter is asked for by
    the name vLLM serves it under)."""
    from rag_bot.llm.openai_compat import OpenAICompatClient

    own = profile_llm or LLMSettings()
    return OpenAICompatClient(
        settings.llm_base_url,
        own.lora_adapter or own.model or settings.llm_model,
        api_key=settings.llm_api_key.get_secret_value(),
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        temperature=settings.llm_temperature if own.temperature is None else own.temperature,
        max_tokens=own.max_tokens or settings.llm_max_tokens,
    )


def build_components(settings: Settings) -> Components:
    embedder = build_embedder(settings)
    return Components(settings, build_store(settings, embedder), embedder, build_llm(settings))


_shared: Components | None = None
_shared_lock = threading.Lock()


def shared_components(settings: Settings) -> Components:
    """One Components per process, so the chat UI and the API share one embedder and one store
    connection. Built on first use; a failure (Postgres down) is raised and the next call retries."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = build_components(settings)
        return _shared


def close_shared_components() -> None:
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
            _shared = None
