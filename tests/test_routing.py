"""Router: profiles file validation, fast/slow path, follow-ups, ambiguity, sentiment."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml

from rag_bot.assistant.conversation import Conversation
from rag_bot.assistant.routing import Router, asks_for_visual, classify_sentiment, is_followup
from rag_bot.errors import ConfigError, LLMUnavailable
from rag_bot.llm.fake import FakeLLM
from rag_bot.profiles import DEFAULT_PROFILES_FILE, INTENTS, ProfilesConfig, load_profiles


class HashingEmbedder:
    """Deterministic bag-of-words embedder: enough signal to test the routing logic without a model."""

    name = "hashing-test"
    dim = 256

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, zlib.crc32(word.encode()) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)


def _described(en: str, examples: list[str]) -> dict:
    return {"description": {"en": en}, "examples": examples}


def small_config(**router: object) -> ProfilesConfig:
    raw = {
        "router": router,
        "intents": {
            "docs": _described(
                "policy documents",
                ["what is the vacation policy", "how do returns work", "what is the warranty policy"],
            ),
            "sql": _described(
                "numbers from the database",
                ["how many orders last month", "total revenue by region", "count tickets by priority"],
            ),
            "chart": _described("draw a chart", ["plot revenue chart", "draw a chart of orders", "chart tickets"]),
            "smalltalk": _described("greetings", ["hello there", "thanks a lot", "goodbye friend"]),
            "out_of_scope": _described("unrelated", ["weather forecast tomorrow", "recipe for soup", "football score"]),
        },
        "domains": {
            "hr": _described("human resources - employees", ["vacation policy", "employees salary", "sick leave"]),
            "sales": _described("sales - orders, revenue", ["orders revenue", "revenue region", "orders discount"]),
            "support": _described(
                "support - returns, tickets", ["returns warranty", "tickets priority", "delivery complaint"]
            ),
        },
        "profiles": {
            "analyst": {
                "audience": "internal",
                "intents": ["docs", "sql", "chart"],
                "domains": ["hr", "sales", "support"],
            },
            "support": {"audience": "public", "intents": ["docs"], "domains": ["support", "sales"]},
        },
    }
    return ProfilesConfig.model_validate(raw)


def make_router(config: ProfilesConfig, profile: str = "analyst", llm: FakeLLM | None = None) -> Router:
    return Router(config, config.profile(profile), HashingEmbedder(), llm=llm)


# -- profiles file --------------------------------------------------------------------------------


def test_repository_profiles_file_defines_the_analyst_and_support_bots() -> None:
    config = load_profiles(DEFAULT_PROFILES_FILE)
    assert set(config.intents) == set(INTENTS)
    assert set(config.domains) == {"hr", "sales", "support", "finance", "it"}
    assert config.profile("analyst").audience == "internal"
    assert set(config.profile("analyst").domains) == set(config.domains)
    assert config.profile("support").audience == "public"
    assert config.profile("support").intents == ["docs"]
    assert config.profile("support").domains == ["support", "sales"]


def test_unknown_key_in_profiles_file_is_an_error_naming_the_file_and_key(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_PROFILES_FILE.read_text(encoding="utf-8"))
    raw["domains"]["hr"]["exampels"] = ["typo"]
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_profiles(path)
    assert str(path) in str(err.value) and "domains.hr.exampels" in str(err.value)


def test_profile_listing_an_undefined_domain_is_rejected(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_PROFILES_FILE.read_text(encoding="utf-8"))
    raw["profiles"]["support"]["domains"].append("legal")
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match="legal"):
        load_profiles(path)


def test_adding_a_domain_needs_only_yaml() -> None:
    config = small_config()
    raw = config.model_dump()
    raw["domains"]["legal"] = _described("legal - contracts", ["contract template", "contract signature nda"])
    raw["profiles"]["analyst"]["domains"].append("legal")
    router = make_router(ProfilesConfig.model_validate(raw))
    assert router.classify("where is the contract template").domains[0] == "legal"


# -- fast and slow path ---------------------------------------------------------------------------


def test_confident_message_stays_on_the_fast_path_without_calling_the_llm() -> None:
    llm = FakeLLM()
    route = make_router(small_config(intent_confidence=0.0, domain_confidence=0.0), llm=llm).classify(
        "how many orders by region"
    )
    assert (route.intent, route.path) == ("sql", "fast")
    assert route.domains[0] == "sales"
    assert llm.received == []
    assert 0.0 <= route.intent_confidence <= 1.0


def test_unsure_fast_path_asks_the_llm_to_choose_among_intents() -> None:
    llm = FakeLLM(replies=["chart"])
    route = make_router(small_config(intent_confidence=1.0, domain_confidence=0.0), llm=llm).classify(
        "orders revenue diagram"
    )
    assert route.intent == "chart" and route.path == "slow"
    assert len(llm.received) == 1
    assert "orders revenue diagram" in llm.received[0][-1].content


def test_llm_outage_keeps_the_fast_path_choice() -> None:
    class DownLLM(FakeLLM):
        def choose(self, messages, choices):  # type: ignore[no-untyped-def]
            raise LLMUnavailable("down")

    route = make_router(small_config(intent_confidence=1.0), llm=DownLLM()).classify("how many orders last month")
    assert route.intent == "sql" and route.path == "fast"


@pytest.mark.parametrize(
    ("message", "visual"),
    [
        ("Построй график выручки по месяцам", True), ("пострй грфик выручки по годам", True),
        ("покажи на диаграмме заказы", True), ("plto revenue by segmnet", True), ("Draw hiring by year", True),
        ("make a histogram of order amounts", True), ("визуализируй платежи", True),
        ("headcount by office", False), ("покажи выручку по регионам", False), ("Thanks a lot!", False),
        ("How many characters must a password have?", False), ("Write a story about a dragon", False),
    ],
)
def test_chart_requests_are_recognised_by_their_words_with_one_typo(message: str, visual: bool) -> None:
    assert asks_for_visual(message) is visual


def test_no_chart_without_a_request_for_a_picture() -> None:
    # Teach the fast path that "picture ..." is a chart (a word asks_for_visual does not know): it still
    # answers the data question (sql), and the slow path is never offered "chart" either.
    raw = small_config(intent_confidence=0.0).model_dump()
    raw["intents"]["chart"]["examples"] += ["picture orders", "orders picture", "picture tickets"]
    config = ProfilesConfig.model_validate(raw)
    assert make_router(config).classify("picture orders").intent == "sql"
    assert make_router(config).classify("picture orders chart").intent == "chart"
    llm = FakeLLM(replies=["sql"])
    raw["router"]["intent_confidence"] = 1.0
    message = "picture of orders and the vacation policy"
    unsure = make_router(ProfilesConfig.model_validate(raw), llm=llm).classify(message)
    assert unsure.intent == "sql"
    assert llm.received and all("- chart:" not in m[0].content for m in llm.received)


def test_smalltalk_and_out_of_scope_carry_no_domain() -> None:
    router = make_router(small_config())
    assert router.classify("hello there, thanks").intent == "smalltalk"
    route = router.classify("weather forecast for tomorrow")
    assert route.intent == "out_of_scope" and route.domains == ()


def test_public_support_bot_marks_analytics_as_not_permitted() -> None:
    route = make_router(small_config(), profile="support").classify("how many orders last month")
    assert route.intent == "sql" and not route.permitted
    assert set(route.domains) <= {"support", "sales"}


# -- ambiguity and follow-ups ----------------------------------------------------------------------


def test_ambiguous_domain_searches_both_domains_by_default() -> None:
    route = make_router(small_config(domain_margin=1.0)).classify("returns of orders")
    assert len(route.domains) == 2 and route.clarifying_question is None


def test_ambiguous_domain_asks_a_short_clarifying_question_when_configured() -> None:
    route = make_router(small_config(domain_margin=1.0, on_ambiguous_domain="clarify")).classify("returns of orders")
    assert route.clarifying_question is not None and route.clarifying_question.endswith("?")
    assert "support" in route.clarifying_question or "sales" in route.clarifying_question


def test_followup_inherits_previous_intent_and_domain() -> None:
    router = make_router(small_config())
    conversation = Conversation()
    first = router.classify("total revenue by region", conversation)
    conversation.add("total revenue by region", first)
    followup = router.classify("and for last year?", conversation)
    assert followup.path == "followup"
    assert (followup.intent, followup.domains) == (first.intent, first.domains)


def test_followup_detection_in_both_languages() -> None:
    assert is_followup("а за прошлый год?")
    assert is_followup("and for last year?")
    assert is_followup("what about Kazakhstan")
    assert not is_followup("How many vacation days do employees get?")


def test_followup_without_history_is_routed_on_its_own() -> None:
    route = make_router(small_config()).classify("and how many orders last month", Conversation())
    assert route.path == "fast" and route.intent == "sql"


# -- sentiment ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("How long is the warranty on monitors?", "neutral"),
        ("Какой срок возврата ноутбука?", "neutral"),
        ("My order still not delivered, this is the third time I write", "negative"),
        ("Опять не привезли заказ, жду уже неделю", "negative"),
        ("This is unacceptable, refund me now!!!", "angry"),
        ("Это безобразие, буду жаловаться в Роспотребнадзор", "angry"),
        ("WHERE IS MY LAPTOP I PAID TWO WEEKS AGO", "angry"),
    ],
)
def test_sentiment_tags_support_messages_for_escalation(message: str, expected: str) -> None:
    assert classify_sentiment(message) == expected


def test_support_questions_carry_sentiment_and_others_do_not() -> None:
    router = make_router(small_config(domain_margin=0.0))
    support = router.classify("what is the returns warranty policy, unacceptable!!!")
    assert "support" in support.domains and support.sentiment == "angry"
    assert router.classify("total revenue by region").sentiment is None


# -- the real slow path ------------------------------------------------------------------------------


@pytest.mark.llm
@pytest.mark.slow
def test_choose_is_constrained_to_the_options_on_a_real_llamacpp_server(llamacpp_server: str) -> None:
    from rag_bot.llm.base import ChatMessage
    from rag_bot.llm.openai_compat import OpenAICompatClient

    client = OpenAICompatClient(llamacpp_server, "ci-model", timeout_s=120)
    messages = [
        ChatMessage("system", "Route the message. Explain your reasoning at length before answering."),
        ChatMessage("user", "Draw a bar chart of revenue by region for 2024"),
    ]
    assert client.choose(messages, ["docs", "sql", "chart", "out_of_scope"]) in {"docs", "sql", "chart", "out_of_scope"}


@pytest.mark.llm
@pytest.mark.slow
def test_unsure_router_takes_the_slow_path_on_a_real_llm(llamacpp_server: str) -> None:
    from rag_bot.llm.openai_compat import OpenAICompatClient

    llm = OpenAICompatClient(llamacpp_server, "ci-model", timeout_s=120)
    router = Router(small_config(intent_confidence=1.0), small_config().profile("analyst"), HashingEmbedder(), llm=llm)
    route = router.classify("Draw a chart of revenue by region")
    assert route.path == "slow" and route.intent in INTENTS


# -- evidence, soft routing, training material ------------------------------------------------------


def test_docs_question_that_no_document_is_close_to_is_out_of_scope_without_the_llm() -> None:
    llm = FakeLLM()
    config = small_config(min_relevance=0.8, intent_confidence=1.0)
    router = Router(config, config.profile("analyst"), HashingEmbedder(), llm=llm, relevance=lambda e: 0.5)
    assert router.classify("what is the vacation policy").intent == "out_of_scope"
    assert llm.received == []
    near = Router(config, config.profile("analyst"), HashingEmbedder(), relevance=lambda e: 0.9)
    assert near.classify("what is the vacation policy").intent == "docs"


def test_soft_routing_covers_the_likely_domains_up_to_the_limit() -> None:
    one = make_router(small_config(domain_margin=0.0)).classify("returns of orders")
    soft_config = small_config(domain_margin=0.0, domain_coverage=0.99, max_domains=2)
    soft = make_router(soft_config).classify("returns of orders")
    assert len(one.domains) == 1 and len(soft.domains) == 2 and soft.domains[0] == one.domains[0]


def test_data_question_without_a_chart_word_keeps_its_confidence_after_chart_is_dropped() -> None:
    router = make_router(small_config())
    message = "orders revenue tickets priority"  # no picture word: chart is dropped
    embedding = HashingEmbedder().embed_queries([message])[0]
    probs = router._intents.probabilities(embedding, message)
    expected = max(p for label, p in probs.items() if label != "chart") / (1 - probs["chart"])
    assert router.classify(message).intent_confidence == pytest.approx(expected)


def test_prototype_classifier_is_selectable_and_routes_clear_messages() -> None:
    router = make_router(small_config(classifier="prototypes"))
    assert router.classify("how many orders last month").intent == "sql"
    assert router.classify("hello there, thanks").intent == "smalltalk"


def test_generated_training_file_adds_examples_and_a_bad_line_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "gen.jsonl"
    good.write_text('{"text": "quarterly bonus payout rules", "intent": "docs", "domain": "hr"}\n', encoding="utf-8")
    router = make_router(small_config(training_file=str(good)))
    assert router.classify("quarterly bonus payout rules").domains[0] == "hr"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "intent": "nonsense"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.jsonl:1"):
        make_router(small_config(training_file=str(bad)))


def test_out_of_scope_reply_names_the_profile_domains_in_the_users_language() -> None:
    from rag_bot import prompts

    config = small_config()
    router = make_router(config, profile="support")
    en = prompts.text("out_of_scope", "en").format(topics=router.topics("en"))
    assert "support" in en and "sales" in en and " and " in en
    assert "{" not in prompts.text("out_of_scope", "ru").format(topics=router.topics("ru"))
