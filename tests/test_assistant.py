"""A conversation turn end to end with the real router, store and embedder, and a scripted LLM."""

from __future__ import annotations

import asyncio

from rag_bot.assistant.conversation import Conversation, Turn
from rag_bot.assistant.respond import Services, remember, respond
from rag_bot.assistant.routing import Router
from rag_bot.assistant.turn import TurnRunner
from rag_bot.embeddings import FastE5Embedder
from rag_bot.llm.fake import FakeLLM
from rag_bot.profiles import get_profiles
from rag_bot.store import VectorStore

DOCS = [
    ("returns.md", "support", "public", "A laptop can be returned within 14 calendar days of delivery."),
    ("leave.md", "hr", "internal", "Ежегодный оплачиваемый отпуск сотрудника — 28 календарных дней."),
    ("bonus.md", "hr", "internal", "The sales bonus is 3 % of the margin above the plan."),
]


def _services(profile: str, seeded: VectorStore, embedder: FastE5Embedder, llm: FakeLLM) -> Services:
    config = get_profiles()
    return Services(llm=llm, store=seeded, embedder=embedder,
                    router=Router(config, config.profile(profile), embedder, llm=None))


def test_docs_question_is_answered_from_its_domain_with_sources(seeded: VectorStore, embedder: FastE5Embedder) -> None:
    llm = FakeLLM(["28 календарных дней [1]."])
    services = _services("analyst", seeded, embedder, llm)
    reply = respond("Сколько дней отпуска положено сотруднику?", conversation=Conversation(),
                    profile=get_profiles().profile("analyst"), services=services)
    assert reply.route.intent == "docs" and "hr" in reply.route.domains
    assert [c.source for c in reply.citations][0] == "leave.md"
    runner = TurnRunner(get_profiles(), lambda _name: services)
    result = asyncio.run(runner.answer("Сколько дней отпуска положено сотруднику?", profile="analyst",
                                       channel="test"))
    assert result.text == result.generated == "28 календарных дней [1]."
    assert result.reply.timings["llm_s"] >= result.reply.timings["llm_first_token_s"] > 0


class _MemoryConversations:
    """The runner's ConversationStore in a dict (the PostgreSQL one is tested in test_sessions.py)."""

    def __init__(self) -> None:
        self.turns: dict[str, list[Turn]] = {}

    def load(self, conversation_id: str, profile: str) -> Conversation:
        return Conversation(turns=list(self.turns.get(conversation_id, [])))

    def append(self, conversation_id: str, profile: str, turn: Turn) -> None:
        self.turns.setdefault(conversation_id, []).append(turn)


def test_a_follow_up_in_the_other_language_is_answered_in_the_follow_ups_language(
    seeded: VectorStore, embedder: FastE5Embedder
) -> None:
    llm = FakeLLM(["Within 14 days [1].", "Тоже 14 дней [1]."])
    services = _services("support", seeded, embedder, llm)
    conversations = _MemoryConversations()
    runner = TurnRunner(get_profiles(), lambda _name: services, conversations=conversations)
    first = asyncio.run(runner.answer("What is the return period for a laptop?", profile="support", channel="test",
                                      conversation_id="c1"))
    assert first.reply.route.language == "en" and "ONLY" in llm.received[0][0].content
    follow = asyncio.run(runner.answer("а для ноутбуков?", profile="support", channel="test",
                                       conversation_id="c1"))
    assert follow.reply.route.language == "ru"
    # Searched with the previous question (English words in it), but prompted and answered in Russian.
    assert "Отвечай по-русски" in llm.received[1][0].content
    assert follow.text == "Тоже 14 дней [1]." and follow.saved
    assert [t.message for t in conversations.turns["c1"]] == ["What is the return period for a laptop?",
                                                             "а для ноутбуков?"]


def test_a_turn_is_counted_in_the_metrics_once_whatever_the_channel(
    seeded: VectorStore, embedder: FastE5Embedder
) -> None:
    from prometheus_client import REGISTRY

    services = _services("support", seeded, embedder, FakeLLM(["14 days [1]."]))
    runner = TurnRunner(get_profiles(), lambda _name: services)

    def count() -> float:
        return REGISTRY.get_sample_value(
            "rag_bot_questions_total", {"channel": "chat", "profile": "support", "intent": "docs", "domain": "support"}
        ) or 0.0

    before = count()
    asyncio.run(runner.answer("What is the return period for a laptop?", profile="support", channel="chat"))
    assert count() == before + 1


def test_a_misrouted_docs_question_still_finds_its_answer_in_the_profiles_other_domains(
    seeded: VectorStore, embedder: FastE5Embedder
) -> None:
    from dataclasses import replace

    services = _services("support", seeded, embedder, FakeLLM())
    classify = services.router.classify
    # Routed to a domain with no documents (as the 1.5B slow path once sent laptop returns to "it").
    services.router.classify = lambda message, conversation=None: replace(  # type: ignore[method-assign]
        classify(message, conversation), intent="docs", domains=["sales"])
    reply = respond("What is the return period for a laptop?", conversation=Conversation(),
                    profile=get_profiles().profile("support"), services=services)
    assert reply.route.domains == ["sales"]
    assert [c.source for c in reply.citations][0] == "returns.md"


def test_public_support_profile_never_sees_internal_documents(seeded: VectorStore, embedder: FastE5Embedder) -> None:
    services = _services("support", seeded, embedder, FakeLLM())
    reply = respond("What is the sales bonus above the plan?", conversation=Conversation(),
                    profile=get_profiles().profile("support"), services=services)
    assert all(c.source != "bonus.md" for c in reply.citations)


def test_public_profile_cannot_run_data_questions(seeded: VectorStore, embedder: FastE5Embedder) -> None:
    services = _services("support", seeded, embedder, FakeLLM())
    reply = respond("Покажи выручку по регионам за 2024 год", conversation=Conversation(),
                    profile=get_profiles().profile("support"), services=services)
    assert reply.route.intent in ("sql", "chart")
    assert reply.sql is None and "only" in reply.text or "только" in reply.text


def test_smalltalk_and_out_of_scope_get_polite_replies_without_the_llm(
    seeded: VectorStore, embedder: FastE5Embedder
) -> None:
    llm = FakeLLM()
    services = _services("analyst", seeded, embedder, llm)
    profile = get_profiles().profile("analyst")
    hello = respond("Привет!", conversation=Conversation(), profile=profile, services=services)
    assert hello.route.intent == "smalltalk" and "Здравствуйте" in hello.text
    weather = respond("What will the weather be in Paris tomorrow?", conversation=Conversation(), profile=profile,
                      services=services)
    assert weather.route.intent == "out_of_scope" and "only help" in weather.text
    assert llm.received == []


def test_angry_customer_is_escalated_to_a_human(seeded: VectorStore, embedder: FastE5Embedder) -> None:
    services = _services("support", seeded, embedder, FakeLLM())
    reply = respond("Позовите живого оператора, я хочу поговорить с человеком!", conversation=Conversation(),
                    profile=get_profiles().profile("support"), services=services)
    assert reply.escalate and "специалист" in reply.text


def test_followup_reuses_the_previous_result_for_a_chart(seeded: VectorStore, embedder: FastE5Embedder) -> None:
    from sandbox import SubprocessSandbox

    code = ("```python\nimport pandas as pd\nimport matplotlib.pyplot as plt\ndf = pd.read_csv('data.csv')\n"
            "plt.bar(df['region'], df['revenue'])\nplt.savefig('chart.png')\n```")
    llm = FakeLLM([code])
    services = _services("analyst", seeded, embedder, llm)
    conversation = Conversation()
    first = respond("Выручка по регионам за 2024 год", conversation=conversation,
                    profile=get_profiles().profile("analyst"), services=services)
    first.sql, first.columns, first.rows = "SELECT 1", ["region", "revenue"], [("Center", 10.0), ("Ural", 5.0)]
    remember(conversation, "Выручка по регионам за 2024 год", first, "ok")
    with SubprocessSandbox(pool_size=0) as box:
        services.sandbox = box
        services.runner = object()  # configured, but the follow-up must not query again
        chart = respond("а теперь покажи это графиком", conversation=conversation,
                        profile=get_profiles().profile("analyst"), services=services)
    assert chart.route.intent == "chart"
    assert chart.chart_png is not None and chart.chart_png.startswith(b"\x89PNG")
    assert chart.sql == "SELECT 1"
