"""The LLM over the OpenAI-compatible HTTP API that `vllm serve` (and llama.cpp's server) expose.

The only module that knows the HTTP API. Explicit timeouts and a small retry count; connection
failures become `LLMUnavailable` with a message that says how to start the server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import openai

from rag_bot.errors import LLMUnavailable
from rag_bot.llm.base import ChatMessage, Completion

logger = logging.getLogger(__name__)

_START_HINT = "Start it with `rag-bot llm serve` (or check RAG_BOT_LLM_BASE_URL)."


class OpenAICompatClient:
    """Chat completions against vLLM / llama.cpp / any OpenAI-compatible server.

    Args:
        base_url: the server's `/v1` URL, e.g. http://127.0.0.1:8001/v1.
        model: the served model name (vLLM's --served-model-name, llama.cpp's --model_alias).
        api_key: any string when the server has no key.
        timeout_s: per-request timeout; connect timeout is 5 s.
        max_retries: retries on connection errors and 5xx (the SDK backs off exponentially).
        temperature: 0 by default so evaluations are deterministic.
        max_tokens: default reply budget.
        http_client: inject an httpx client (tests use httpx.MockTransport).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "not-needed",
        timeout_s: float = 120.0,
        max_retries: int = 2,
        temperature: float = 0.0,
        max_tokens: int = 512,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self._temperature = temperature
        self._max_tokens = max_tokens
        timeout = httpx.Timeout(timeout_s, connect=5.0)
        # openai is annotated with httpx2's types but converts httpx timeouts and accepts httpx clients.
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,  # type: ignore[arg-type]
            http_client=http_client,  # type: ignore[arg-type]
        )
        self._aclient = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,  # type: ignore[arg-type]
            http_client=async_http_client,  # type: ignore[arg-type]
        )

    def _params(self, messages: Sequence[ChatMessage], max_tokens: int | None) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": self._temperature,
            "max_tokens": max_tokens or self._max_tokens,
        }

    def _unavailable(self, exc: Exception) -> LLMUnavailable:
        if isinstance(exc, openai.NotFoundError):
            return LLMUnavailable(
                f"The language model server at {self.base_url} does not serve the model '{self.model}'. "
                "Set RAG_BOT_LLM_MODEL to a served model name."
            )
        if isinstance(exc, openai.APITimeoutError):
            return LLMUnavailable(
                f"The language model at {self.base_url} did not answer in time. It may be overloaded; "
                "try again in a moment."
            )
        return LLMUnavailable(f"The language model at {self.base_url} is not answering. {_START_HINT}")

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> Completion:
        try:
            response = self._client.chat.completions.create(**self._params(messages, max_tokens))
        except openai.APIError as exc:
            raise self._unavailable(exc) from exc
        usage = response.usage
        return Completion(
            text=response.choices[0].message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> Iterator[str]:
        try:
            chunks = self._client.chat.completions.create(**self._params(messages, max_tokens), stream=True)
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except openai.APIError as exc:
            raise self._unavailable(exc) from exc

    async def astream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None
    ) -> AsyncIterator[str]:
        try:
            chunks = await self._aclient.chat.completions.create(
                **self._params(messages, max_tokens), stream=True
            )
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except openai.APIError as exc:
            raise self._unavailable(exc) from exc

    def choose(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> str:
        """One of `choices`, constrained by the server, as a JSON object {"choice": ...}.

        vLLM reads `structured_outputs: {"json": schema}`; llama.cpp's server reads a GBNF `grammar`
        (each engine ignores the other's field). The grammar spells the whole reply with no free
        whitespace: llama.cpp's JSON-schema grammar lets a small model pad with newlines until the
        token budget runs out, which leaves unparseable JSON.
        """
        schema = {
            "type": "object",
            "properties": {"choice": {"type": "string", "enum": list(choices)}},
            "required": ["choice"],
        }
        try:
            response = self._client.chat.completions.create(
                **self._params(messages, 48),
                extra_body={"structured_outputs": {"json": schema}, "grammar": _choice_grammar(choices)},
            )
        except openai.APIError as exc:
            raise self._unavailable(exc) from exc
        text = response.choices[0].message.content or ""
        try:
            value = json.loads(text)["choice"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise LLMUnavailable(
                "The language model ignored the structured-output constraint; check that the server "
                "supports JSON schemas."
            ) from exc
        if value not in choices:
            raise LLMUnavailable(f"The language model chose {value!r}, which is not an allowed option.")
        return str(value)

    def complete_json(
        self,
        messages: Sequence[ChatMessage],
        schema: dict[str, Any],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """A JSON object constrained by `schema`.

        llama.cpp's server (llama-cpp-python 0.3.x) compiles `response_format={"type": "json_object",
        "schema": ...}` into a grammar; vLLM reads `structured_outputs: {"json": ...}` and ignores the
        other field. Both are sent, as in `choose`.
        """
        params = self._params(messages, max_tokens)
        if temperature is not None:
            params["temperature"] = temperature
        try:
            # llama.cpp's "schema" key is not in openai's ResponseFormatJSONObject.
            response = self._client.chat.completions.create(  # type: ignore[call-overload]
                **params,
                response_format={"type": "json_object", "schema": schema},
                extra_body={"structured_outputs": {"json": schema}},
            )
        except openai.APIError as exc:
            raise self._unavailable(exc) from exc
        text = response.choices[0].message.content or ""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            # A reply cut by max_tokens is the usual cause; callers treat it as a failed attempt.
            raise LLMUnavailable(
                "The language model returned incomplete structured output (it may have run out of tokens)."
            ) from exc
        if not isinstance(value, dict):
            raise LLMUnavailable("The language model returned JSON that is not an object.")
        return value

    def served_models(self) -> list[str]:
        """Model names the server offers (`GET /v1/models`); used by `rag-bot doctor`."""
        try:
            return [m.id for m in self._client.models.list()]
        except openai.APIError as exc:
            raise self._unavailable(exc) from exc


def _choice_grammar(choices: Sequence[str]) -> str:
    """GBNF for exactly `{"choice": "<one of choices>"}`."""
    alternatives = " | ".join(json.dumps(json.dumps(c)) for c in choices)
    return f'root ::= "{{\\"choice\\": " value "}}"\nvalue ::= {alternatives}'
