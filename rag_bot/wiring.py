"""Build the real components from Settings, once, for the CLI and the chat UI."""

from __future__ import annotations

from dataclasses import dataclass

from rag_bot.config import Settings
from rag_bot.db import store_url
from rag_bot.embeddings import Embedder, build_embedder
from rag_bot.llm.openai_compat import OpenAICompatClient
from rag_bot.store import VectorStore


@dataclass
class Components:
    settings: Settings
    store: VectorStore
    embedder: Embedder
    llm: OpenAICompatClient


def build_store(settings: Settings, embedder: Embedder) -> VectorStore:
    store = VectorStore(store_url(settings), embedder_name=embedder.name, dim=embedder.dim)
    store.migrate()
    return store


def build_llm(settings: Settings) -> OpenAICompatClient:
    return OpenAICompatClient(
        settings.llm_base_url,
        settings.llm_model,
        api_key=settings.llm_api_key.get_secret_value(),
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        temperature=settings.llm_temperature,
        max_tokens=settings.llm_max_tokens,
    )


def build_components(settings: Settings) -> Components:
    embedder = build_embedder(settings)
    return Components(settings, build_store(settings, embedder), embedder, build_llm(settings))
