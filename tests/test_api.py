"""The HTTP API over the real router, store, embedder and Postgres conversations, with a scripted LLM."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import ConnectionPool

from rag_bot import prompts
from rag_bot.api import Backend, create_app
from rag_bot.api.keys import ApiKey, KeyRing, hash_key
from rag_bot.assistant.respond import Services
from rag_bot.assistant.routing import Router
from rag_bot.embeddings import FastE5Embedder
from rag_bot.errors import LLMUnavailable
from rag_bot.llm.base import ChatMessage
from rag_bot.llm.fake import FakeLLM
from rag_bot.observability import RequestIdFilter
from rag_bot.profiles import Profile, ProfilesConfig, get_profiles
from rag_bot.store import VectorStore

DOCS = [
    ("warranty.md", "support", "public",
     "Laptops have a 24-month warranty. Warranty repairs are done by the service centre within 14 days."),
    ("warranty-costs.md", "support", "internal",
     "Internal: the warranty repair budget is 1.2 million rubles per quarter; the supplier reimburses 60 % "
     "of repair costs."),
]
SECRET = "1.2 million"
KEYS = {"public-key": ("helpdesk", "support", None), "staff-key": ("backoffice", "staff", None),
        "slow-key": ("tiny", "support", 2)}


@pytest.fixture(scope="module")
def support_router(embedder: FastE5Embedder) -> Router:
    config = get_profiles()
    return Router(config, config.profile("support"), embedder, llm=None)


@pytest.fixture(scope="module")
def profiles() -> ProfilesConfig:
    """The real profiles plus 'staff': internal audience over the support bot's domains and intents."""
    config = get_profiles()
    staff = Profile(description="internal support staff", audience="internal", intents=["docs"],
                    domains=["support", "sales"])
    return config.model_copy(update={"profiles": {**config.profiles, "staff": staff}})


@pytest.fixture
def pool(fresh_db_url: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(fresh_db_url, min_size=1, max_size=3, kwargs={"autocommit": True}, open=True) as p:
        yield p


class ForbiddenRunner:
    """A SQL runner wired in on purpose: the public profile must never get as far as touching it."""

    def __init__(self) -> None:
        self.touched: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.touched.append(name)
        raise AssertionError(f"the SQL runner was used ({name}) through a public key")


@pytest.fixture
def runner() -> ForbiddenRunner:
    return ForbiddenRunner()


@pytest.fixture
def llm() -> FakeLLM:
    return FakeLLM(default="Laptops have a 24-month warranty [1].")


def make_app(
    seeded: VectorStore, embedder: FastE5Embedder, router: Router, llm: Any, profiles: ProfilesConfig,
    connection: Callable[[], Any], runner: ForbiddenRunner | None = None,
) -> FastAPI:
    """One replica: its own app object over shared seams (nothing in them holds a conversation)."""
    services = Services(llm=llm, store=seeded, embedder=embedder, router=router, runner=runner)
    keys = KeyRing([ApiKey(id=key_id, sha256=hash_key(key), profile=profile, rate_per_minute=rate)
                    for key, (key_id, profile, rate) in KEYS.items()])
    backend = Backend(profiles=profiles, services=lambda profile: services, connection=connection, keys=keys,
                      rate_per_minute=1000)
    return create_app(backend)


@pytest.fixture
def client(seeded: VectorStore, embedder: FastE5Embedder, support_router: Router, llm: FakeLLM,
           profiles: ProfilesConfig, pool: ConnectionPool, runner: ForbiddenRunner) -> Iterator[TestClient]:
    with TestClient(make_app(seeded, embedder, support_router, llm, profiles, pool.connection, runner)) as c:
        yield c


def auth(key: str = "public-key") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metric(client: TestClient, name: str, **labels: str) -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def prompt_text(messages: Sequence[ChatMessage]) -> str:
    return "\n".join(m.content for m in messages)


# -- authentication and limits --------------------------------------------------------------------
def test_requests_without_a_valid_key_are_refused_with_401(client: TestClient) -> None:
    missing = client.post("/api/v1/ask", json={"question": "Hello!"})
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["error"] == "unauthorized"
    wrong = client.post("/api/v1/ask", json={"question": "Hello!"}, headers=auth("not-a-key"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    stream = client.post("/api/v1/ask/stream", json={"question": "Hello!"})
    assert stream.status_code == 401
    by_header = client.post("/api/v1/ask", json={"question": "Hello!"}, headers={"X-API-Key": "public-key"})
    assert by_header.status_code == 200


def test_a_key_over_its_rate_gets_429_with_retry_after(client: TestClient) -> None:
    for _ in range(2):
        assert client.post("/api/v1/ask", json={"question": "Hello!"}, headers=auth("slow-key")).status_code == 200
    limited = client.post("/api/v1/ask", json={"question": "Hello!"}, headers=auth("slow-key"))
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 30  # 2 per minute: one request every 30 s
    assert client.post("/api/v1/ask", json={"question": "Hello!"}, headers=auth()).status_code == 200  # other keys


# -- what a public key can reach ------------------------------------------------------------------
def test_public_key_never_reaches_internal_documents(client: TestClient, llm: FakeLLM) -> None:
    question = {"question": "Who pays for warranty repairs of laptops?"}
    public = client.post("/api/v1/ask", json=question, headers=auth()).json()
    assert public["intent"] == "docs"
    assert [s["source"] for s in public["sources"]] == ["warranty.md"]
    assert all(SECRET not in prompt_text(messages) for messages in llm.received)

    staff = client.post("/api/v1/ask", json=question, headers=auth("staff-key")).json()  # the same question
    assert "warranty-costs.md" in [s["source"] for s in staff["sources"]]
    assert SECRET in prompt_text(llm.received[-1])


def test_public_key_cannot_run_sql_even_with_a_runner_wired(
    client: TestClient, llm: FakeLLM, runner: ForbiddenRunner
) -> None:
    body = client.post("/api/v1/ask", json={"question": "Покажи выручку по регионам за 2024 год"},
                       headers=auth()).json()
    assert body["intent"] in ("sql", "chart")
    assert body["sql"] is None and body["rows"] is None and body["columns"] is None
    assert body["answer"] == prompts.text("not_permitted", "ru")
    assert runner.touched == [] and llm.received == []


# -- answers, streaming, conversations ------------------------------------------------------------
def test_ask_returns_the_answer_with_sources_and_routing(client: TestClient) -> None:
    response = client.post("/api/v1/ask", json={"question": "How long is the warranty on laptops?"}, headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert body["answer"] == "Laptops have a 24-month warranty [1]."
    assert body["sources"][0] == {"number": 1, "title": "warranty.md", "source": "warranty.md", "section": None,
                                  "page": None}
    assert (body["intent"], body["domains"], body["language"], body["escalate"]) == ("docs", ["support"], "en", False)
    assert body["conversation_id"] and body["request_id"] == response.headers["X-Request-ID"]


def test_language_overrides_the_detected_one(client: TestClient, llm: FakeLLM, profiles: ProfilesConfig) -> None:
    body = client.post("/api/v1/ask", json={"question": "How long is the warranty on laptops?", "language": "ru"},
                       headers=auth()).json()
    # The support profile's own instructions (profiles.yaml), in the requested language.
    expected = profiles.profile("support").system_prompt("ru", prompts.DOCS_SYSTEM["ru"])
    assert body["language"] == "ru" and llm.received[-1][0].content == expected
    assert expected.startswith("Ты - ассистент поддержки клиентов")


def test_stream_sends_route_tokens_sources_done_in_order(client: TestClient) -> None:
    with client.stream("POST", "/api/v1/ask/stream", json={"question": "How long is the warranty on laptops?"},
                       headers=auth()) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.iter_lines())
    names = [name for name, _ in events]
    assert names[0] == "route" and names[-2:] == ["sources", "done"]
    assert set(names[1:-2]) == {"token"} and len(names) > 4  # FakeLLM streams 8 characters at a time
    tokens = "".join(data["text"] for name, data in events if name == "token")
    done = events[-1][1]
    assert tokens == done["answer"] == "Laptops have a 24-month warranty [1]."
    assert events[0][1]["intent"] == "docs" and events[0][1]["conversation_id"] == done["conversation_id"]
    assert [s["source"] for s in events[-2][1]["sources"]] == ["warranty.md"]


def test_conversation_continues_on_another_replica_sharing_postgres(
    seeded: VectorStore, embedder: FastE5Embedder, support_router: Router, profiles: ProfilesConfig,
    fresh_db_url: str,
) -> None:
    llm = FakeLLM(default="Monitors have a 24-month warranty [1].")
    with ConnectionPool(fresh_db_url, min_size=1, kwargs={"autocommit": True}, open=True) as pool_a, \
            ConnectionPool(fresh_db_url, min_size=1, kwargs={"autocommit": True}, open=True) as pool_b:
        replica_a = TestClient(make_app(seeded, embedder, support_router, llm, profiles, pool_a.connection))
        replica_b = TestClient(make_app(seeded, embedder, support_router, llm, profiles, pool_b.connection))
        with replica_a, replica_b:
            first = replica_a.post("/api/v1/ask", json={"question": "How long is the warranty on laptops?",
                                                        "conversation_id": "ticket-42"}, headers=auth()).json()
            assert first["intent"] == "docs"
            second = replica_b.post("/api/v1/ask", json={"question": "and for monitors?",
                                                         "conversation_id": "ticket-42"}, headers=auth()).json()
            # Replica B knew the first question: the follow-up was searched and asked together with it.
            assert second["intent"] == "docs" and second["conversation_id"] == "ticket-42"
            assert "How long is the warranty on laptops? and for monitors?" in prompt_text(llm.received[-1])

            # A fresh conversation: a self-contained question (a bare "and for monitors?" with no earlier
            # turn is rightly out of scope now), and nothing of ticket-42 in its prompt.
            fresh = replica_b.post("/api/v1/ask", json={"question": "What is the warranty for monitors?",
                                                        "conversation_id": "other"},
                                   headers=auth()).json()
            assert fresh["intent"] == "docs" and "laptops" not in prompt_text(llm.received[-1])
            # Another key using the same conversation id starts its own conversation.
            asked = len(llm.received)
            other_key = replica_b.post("/api/v1/ask", json={"question": "What is the warranty for monitors?",
                                                            "conversation_id": "ticket-42"}, headers=auth("staff-key"))
            assert other_key.json()["intent"] == "docs" and len(llm.received) == asked + 1
            assert "laptops" not in prompt_text(llm.received[-1])
    with psycopg.connect(fresh_db_url) as conn:
        row = conn.execute("SELECT profile, jsonb_array_length(turns) FROM conversations WHERE id = %s",
                           ("api:helpdesk:ticket-42",)).fetchone()
    assert row == ("support", 2)


# -- failures -------------------------------------------------------------------------------------
class DeadLLM(FakeLLM):
    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> Iterator[str]:
        raise LLMUnavailable("The language model at http://10.0.0.5:8001/v1 is not answering.")
        yield ""  # pragma: no cover - makes this a generator


def test_dead_llm_is_a_503_with_a_user_message(
    seeded: VectorStore, embedder: FastE5Embedder, support_router: Router, profiles: ProfilesConfig,
    pool: ConnectionPool,
) -> None:
    question = {"question": "How long is the warranty on laptops?"}
    with TestClient(make_app(seeded, embedder, support_router, DeadLLM(), profiles, pool.connection)) as client:
        before = metric(client, "rag_bot_errors_total", kind="llm_unavailable")
        response = client.post("/api/v1/ask", json=question, headers=auth())
        assert response.status_code == 503
        assert response.json() == {"error": "llm_unavailable", "message": prompts.text("llm_down", "en"),
                                   "request_id": response.headers["X-Request-ID"]}
        with client.stream("POST", "/api/v1/ask/stream", json=question, headers=auth()) as streamed:
            events = parse_sse(streamed.iter_lines())
        assert [name for name, _ in events] == ["route", "error"]
        assert events[-1][1]["error"] == "llm_unavailable" and "10.0.0.5" not in json.dumps(events)
        assert metric(client, "rag_bot_errors_total", kind="llm_unavailable") == before + 2


def test_dead_database_is_a_503_with_a_user_message(
    seeded: VectorStore, embedder: FastE5Embedder, support_router: Router, profiles: ProfilesConfig, llm: FakeLLM,
) -> None:
    @contextmanager
    def dead_connection() -> Iterator[psycopg.Connection]:
        with psycopg.connect("host=127.0.0.1 port=9 dbname=gone user=nobody connect_timeout=2") as conn:
            yield conn

    with TestClient(make_app(seeded, embedder, support_router, llm, profiles, dead_connection)) as client:
        response = client.post("/api/v1/ask", json={"question": "Когда работает поддержка?"}, headers=auth())
        assert response.status_code == 503
        assert response.json()["error"] == "database_unavailable"
        assert response.json()["message"] == prompts.text("db_down", "ru")
        assert "127.0.0.1" not in response.text
        assert client.get("/readyz").status_code == 503


# -- observability --------------------------------------------------------------------------------
def test_metrics_count_a_question_and_its_stages(client: TestClient) -> None:
    labels = {"channel": "api", "profile": "support", "intent": "docs", "domain": "support"}
    before = metric(client, "rag_bot_questions_total", **labels)
    first_token = metric(client, "rag_bot_stage_seconds_count", stage="llm_first_token")
    streamed = metric(client, "rag_bot_llm_tokens_total", kind="streamed")
    response = client.post("/api/v1/ask", json={"question": "How long is the warranty on laptops?"}, headers=auth())
    assert response.status_code == 200
    assert metric(client, "rag_bot_questions_total", **labels) == before + 1
    assert metric(client, "rag_bot_stage_seconds_count", stage="llm_first_token") == first_token + 1
    assert metric(client, "rag_bot_llm_tokens_total", kind="streamed") > streamed
    for stage in ("route", "retrieve", "total"):
        assert metric(client, "rag_bot_stage_seconds_count", stage=stage) >= 1
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_request_id_follows_the_question_into_the_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(RequestIdFilter())
    response = client.post("/api/v1/ask", json={"question": "How long is the warranty on laptops?"},
                           headers={**auth(), "X-Request-ID": "desk-123"})
    assert response.headers["X-Request-ID"] == "desk-123" and response.json()["request_id"] == "desk-123"
    by_logger = {r.name: getattr(r, "request_id", None) for r in caplog.records}
    assert by_logger["rag_bot.assistant.routing"] == "desk-123"  # logged in the worker thread that answered
    assert by_logger["rag_bot.assistant.turn"] == "desk-123"  # the turn runner's answer line


def test_openapi_schema_and_health(client: TestClient) -> None:
    schema = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/ask", "/api/v1/ask/stream"} <= set(schema["paths"])
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def parse_sse(lines: Iterator[str]) -> list[tuple[str, Any]]:
    """(event, data) pairs; pings (comments) are skipped."""
    events: list[tuple[str, Any]] = []
    name, data = "message", []
    for line in lines:
        if not line:
            if data:
                events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:"):].strip())
    if data:
        events.append((name, json.loads("\n".join(data))))
    return events


def test_an_answer_carries_follow_up_suggestions_the_bot_can_answer(client: TestClient,
                                                                   profiles: ProfilesConfig) -> None:
    body = client.post("/api/v1/ask", json={"question": "Hello!"}, headers=auth()).json()
    starters = [s.message for s in profiles.profile("support").starters_for("en")][:3]
    assert body["intent"] == "smalltalk" and starters and body["suggestions"] == starters
