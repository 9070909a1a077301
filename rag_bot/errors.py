"""Errors whose message is safe and useful to show to a user.

RagBotError
 ├── ConfigError            a setting is missing or wrong
 ├── LLMUnavailable         the LLM server does not answer
 ├── DatabaseUnavailable    PostgreSQL is down or lacks pgvector
 ├── EmbeddingError         the embedding model failed or does not match the store
 ├── SQLRejected            the SQL guard refused a query
 └── IngestError            one file could not be ingested (collected into a report)
"""

from __future__ import annotations


class RagBotError(Exception):
    """Base error; `str(err)` is written for the person who sees it: what happened, what to do."""


class ConfigError(RagBotError):
    pass


class LLMUnavailable(RagBotError):
    pass


class DatabaseUnavailable(RagBotError):
    pass


class EmbeddingError(RagBotError):
    pass


class SQLRejected(RagBotError):
    pass


class IngestError(RagBotError):
    pass
