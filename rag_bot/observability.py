"""Prometheus metrics and a request id that follows one question through the logs.

Metrics live in prometheus-client's default registry (so /metrics also shows the process's CPU and
memory); each replica exposes its own numbers and Prometheus sums them. Record a question with
`observe_question(reply, ...)` from any entry point (the HTTP API does; the chat UI can).

The request id is a contextvar: the API's middleware sets it per HTTP request (or takes the
caller's `X-Request-ID`), and `RequestIdFilter` copies it onto every log record, including those
written in worker threads (Starlette copies the context into its thread pool).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from prometheus_client import Counter, Histogram, disable_created_metrics

from rag_bot.llm.base import ChatMessage, Completion, LLMClient

# -- request id -----------------------------------------------------------------------------------
request_id_var: ContextVar[str | None] = ContextVar("rag_bot_request_id", default=None)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_request_id(supplied: str | None = None) -> str:
    """The caller's id when it is short and plain (it ends up in logs), else a fresh one."""
    if supplied and _SAFE_ID.match(supplied):
        return supplied
    return uuid.uuid4().hex[:16]


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` ('-' outside a request); attach it to handlers, not loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"


def install_request_id_logging(fmt: str = LOG_FORMAT) -> None:
    """Put the request id into every line the root logger's handlers write (entry points call this)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    for handler in root.handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
        handler.setFormatter(logging.Formatter(fmt))


# -- metrics --------------------------------------------------------------------------------------
# No *_created series: they double the output and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

QUESTIONS = Counter(
    "rag_bot_questions", "Questions answered, by channel (api/chat), bot profile, intent and domain(s).",
    ["channel", "profile", "intent", "domain"],
)
ESCALATIONS = Counter(
    "rag_bot_escalations", "Replies that asked for a human (angry customer or explicit request).",
    ["channel", "profile"],
)
STAGE_SECONDS = Histogram(
    "rag_bot_stage_seconds",
    "Time per stage of a question: route, retrieve, sql (whole text-to-SQL step), sql_execute, "
    "chart_code, sandbox, llm_first_token, llm (the streamed answer), total.",
    ["stage"], buckets=_LATENCY_BUCKETS,
)
ERRORS = Counter(
    "rag_bot_errors", "Failed requests by kind (llm_unavailable, database_unavailable, internal, ...).",
    ["kind"],
)
REJECTED = Counter(
    "rag_bot_rejected_requests", "Requests refused before answering (unauthorized, rate_limited).", ["reason"],
)
LLM_TOKENS = Counter(
    "rag_bot_llm_tokens",
    "LLM tokens: prompt/completion as the server reports them for whole completions; streamed = "
    "answer deltas received (vLLM and llama.cpp send one token per delta).",
    ["kind"],
)
LLM_CALLS = Counter("rag_bot_llm_calls", "LLM calls by method and outcome (ok/error).", ["method", "outcome"])


def domain_label(domains: Sequence[str]) -> str:
    """One label value per question: 'hr', 'sales+support' when ambiguous, 'none' for smalltalk."""
    return "+".join(sorted(domains)) or "none"


def stage_timings(timings: dict[str, float]) -> dict[str, float]:
    """Reply.timings (whatever keys the steps wrote) grouped into the stages the histogram knows."""
    stages: dict[str, float] = {}

    def add(stage: str, seconds: float) -> None:
        stages[stage] = stages.get(stage, 0.0) + seconds

    for key, seconds in timings.items():
        if key == "route_s":
            add("route", seconds)
        elif key == "retrieve_s":
            add("retrieve", seconds)
        elif key == "sql_total":
            add("sql", seconds)
        elif key == "sql_execute":
            add("sql_execute", seconds)
        elif key.startswith("sandbox_"):
            add("sandbox", seconds)
        elif key.startswith("generate_") and key.endswith("_s"):  # chart code generation attempts
            add("chart_code", seconds)
        elif key == "llm_first_token_s":
            add("llm_first_token", seconds)
        elif key == "llm_s":
            add("llm", seconds)
    return stages


def observe_question(
    *, channel: str, profile: str, intent: str, domains: Sequence[str], escalate: bool,
    timings: dict[str, float], total_s: float,
) -> None:
    """Count one answered question and its stage latencies."""
    QUESTIONS.labels(channel, profile, intent, domain_label(domains)).inc()
    if escalate:
        ESCALATIONS.labels(channel, profile).inc()
    for stage, seconds in stage_timings(timings).items():
        STAGE_SECONDS.labels(stage).observe(seconds)
    STAGE_SECONDS.labels("total").observe(total_s)


def observe_error(kind: str) -> None:
    ERRORS.labels(kind).inc()


def error_kind(exc: BaseException) -> str:
    """The bounded metric label of a failure: llm_unavailable, database_unavailable or internal."""
    import psycopg
    from psycopg_pool import PoolTimeout

    from rag_bot.errors import DatabaseUnavailable, LLMUnavailable

    if isinstance(exc, LLMUnavailable):
        return "llm_unavailable"
    if isinstance(exc, DatabaseUnavailable | psycopg.OperationalError | PoolTimeout):
        return "database_unavailable"
    return "internal"


class MeteredLLM:
    """An LLMClient that counts calls and tokens into the metrics, delegating everything else."""

    def __init__(self, inner: LLMClient) -> None:
        self._inner = inner
        self.model = inner.model

    def __getattr__(self, name: str) -> Any:  # served_models(), base_url, ...
        return getattr(self._inner, name)

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> Completion:
        with _counted("complete"):
            completion = self._inner.complete(messages, max_tokens=max_tokens)
        LLM_TOKENS.labels("prompt").inc(completion.prompt_tokens)
        LLM_TOKENS.labels("completion").inc(completion.completion_tokens)
        return completion

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> Iterator[str]:
        with _counted("stream"):
            for piece in self._inner.stream(messages, max_tokens=max_tokens):
                LLM_TOKENS.labels("streamed").inc()
                yield piece

    async def astream(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> AsyncIterator[str]:
        with _counted("stream"):
            async for piece in self._inner.astream(messages, max_tokens=max_tokens):
                LLM_TOKENS.labels("streamed").inc()
                yield piece

    def choose(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> str:
        with _counted("choose"):
            return self._inner.choose(messages, choices)

    def complete_json(
        self, messages: Sequence[ChatMessage], schema: dict[str, Any], *, max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        with _counted("complete_json"):
            return self._inner.complete_json(messages, schema, max_tokens=max_tokens, temperature=temperature)


@contextmanager
def _counted(method: str) -> Iterator[None]:
    """Count one LLM call as ok or error; a consumer that stops a stream early is not an error."""
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except GeneratorExit:
        outcome = "ok"
        raise
    finally:
        LLM_CALLS.labels(method, outcome).inc()
