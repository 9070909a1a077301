"""The OpenAI-compatible client against a fake HTTP transport (httpx.MockTransport), not patched code."""

from __future__ import annotations

import json

import httpx
import pytest

from rag_bot.errors import LLMUnavailable
from rag_bot.llm.base import ChatMessage
from rag_bot.llm.openai_compat import OpenAICompatClient

MESSAGES = [ChatMessage("user", "hi")]


def _completion(content: str) -> dict:
    return {
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def _client(handler) -> OpenAICompatClient:  # type: ignore[no-untyped-def]
    return OpenAICompatClient("http://llm.test/v1", "m", max_retries=0,
                              http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def test_complete_sends_model_and_temperature() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=_completion("hello"))

    result = _client(handler).complete(MESSAGES)
    assert result.text == "hello" and result.completion_tokens == 2
    assert seen[0]["model"] == "m" and seen[0]["temperature"] == 0.0


def test_stream_yields_deltas() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        events = "".join(
            "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                                   "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            + "\n\n"
            for piece in ["Hel", "lo"]
        ) + "data: [DONE]\n\n"
        return httpx.Response(200, text=events, headers={"content-type": "text/event-stream"})

    assert "".join(_client(handler).stream(MESSAGES)) == "Hello"


def test_choose_sends_a_schema_and_validates_the_reply() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=_completion('{"choice": "sql"}'))

    assert _client(handler).choose(MESSAGES, ["docs", "sql"]) == "sql"
    assert bodies[0]["structured_outputs"]["json"]["properties"]["choice"]["enum"] == ["docs", "sql"]


def test_choose_refuses_an_answer_outside_the_choices() -> None:
    client = _client(lambda request: httpx.Response(200, json=_completion('{"choice": "weather"}')))
    with pytest.raises(LLMUnavailable, match="not an allowed option"):
        client.choose(MESSAGES, ["docs", "sql"])


def test_dead_server_gives_a_message_that_says_how_to_start_it() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(LLMUnavailable, match="rag-bot llm serve"):
        _client(handler).complete(MESSAGES)


def test_unknown_model_is_explained() -> None:
    client = _client(lambda request: httpx.Response(404, json={"error": {"message": "model not found"}}))
    with pytest.raises(LLMUnavailable, match="RAG_BOT_LLM_MODEL"):
        client.complete(MESSAGES)
