"""Follow-up suggestions: drawn from what the deployment holds, in the answer's language, never the
question just asked, off per profile; carried by the API answer."""

from __future__ import annotations

from decimal import Decimal

from rag_bot.analytics.schema_context import add_solved_example
from rag_bot.assistant.conversation import Conversation, Route
from rag_bot.assistant.respond import Reply, Services, respond
from rag_bot.assistant.routing import Router
from rag_bot.assistant.suggestions import suggest
from rag_bot.documents.retrieval import Citation
from rag_bot.embeddings import FastE5Embedder
from rag_bot.llm.fake import FakeLLM
from rag_bot.profiles import get_profiles
from rag_bot.store import VectorStore

DOCS = [
    ("returns.md", "support", "public", "A laptop can be returned within 14 calendar days of delivery."),
]
SAVED = [
    ("Revenue by region in 2024", "SELECT 1"),
    ("Выручка по регионам за 2024 год", "SELECT 2"),
    ("Share of urgent tickets per support channel", "SELECT 3"),
    ("Сколько сотрудников нанято по годам?", "SELECT 4"),
]


def _services(seeded: VectorStore, embedder: FastE5Embedder, profile: str = "analyst") -> Services:
    config = get_profiles()
    return Services(llm=FakeLLM(), store=seeded, embedder=embedder,
                    router=Router(config, config.profile(profile), embedder, llm=None))


def _route(intent: str, language: str) -> Route:
    return Route(intent=intent, domains=("sales",), intent_confidence=0.9, domain_confidence=0.9,  # type: ignore[arg-type]
                 path="fast", language=language)


def test_after_a_data_answer_a_chart_and_the_nearest_saved_questions_in_its_language(
    seeded: VectorStore, embedder: FastE5Embedder
) -> None:
    for question, sql in SAVED:
        add_solved_example(seeded, embedder, question, sql)
    reply = Reply(route=_route("sql", "ru"), sql="SELECT ...", columns=["region", "revenue"],
                  rows=[("Центр", Decimal("10.5")), ("Урал", Decimal("3.0"))])
    profile = get_profiles().profile("analyst")
    got = suggest("Выручка по регионам в 2025 году", reply, profile, _services(seeded, embedder))
    assert got[0] == "Покажи это графиком" and len(got) == 3
    assert got[1] == "Выручка по регионам за 2024 год"  # the nearest saved question, Russian first
    assert set(got[1:]) <= {q for q, _ in SAVED}

    # The question just asked is never offered back; a one-row result gets no chart offer.
    one_row = Reply(route=_route("sql", "en"), sql="SELECT ...", columns=["revenue"], rows=[(Decimal("1"),)])
    again = suggest("revenue by region in 2024?", one_row, profile, _services(seeded, embedder))
    assert "Revenue by region in 2024" not in again and "Show this as a chart" not in again and again


def test_after_a_docs_answer_the_other_sections_and_after_small_talk_the_starters(
    seeded: VectorStore, embedder: FastE5Embedder
) -> None:
    cite = [Citation(number=n, title="returns.md", source="returns.md", section=s, page=None, passage="p",
                     domain="support") for n, s in ((1, "Return period"), (2, "Refunds"), (3, "Warranty"))]
    profile = get_profiles().profile("support")
    docs = suggest("Can I return a laptop?", Reply(route=_route("docs", "en"), citations=cite), profile,
                   _services(seeded, embedder, "support"))
    assert docs == ["Tell me more: «Refunds»", "Tell me more: «Warranty»"]

    hello = respond("Привет!", conversation=Conversation(), profile=profile, services=_services(seeded, embedder,
                                                                                                "support"))
    starters = [s.message for s in profile.starters_for("ru")][:3]
    assert hello.route.intent == "smalltalk" and starters and hello.suggestions == starters


def test_a_profile_with_follow_ups_off_offers_none(seeded: VectorStore, embedder: FastE5Embedder) -> None:
    profile = get_profiles().profile("support").model_copy(update={"follow_ups": False})
    reply = respond("Привет!", conversation=Conversation(), profile=profile,
                    services=_services(seeded, embedder, "support"))
    assert reply.route.intent == "smalltalk" and reply.suggestions == []
