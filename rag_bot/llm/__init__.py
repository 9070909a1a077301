"""The LLM seam: every model call goes through `LLMClient` over an OpenAI-compatible HTTP API.

    base.py           LLMClient protocol, ChatMessage, Completion
    openai_compat.py  OpenAICompatClient: vLLM or llama.cpp's server (timeouts, retries, structured output)
    fake.py           FakeLLM: scripted replies for unit tests

Starting a server is rag_bot.stack's job; here the model is only ever a URL.
"""

from rag_bot.llm.base import ChatMessage, Completion, LLMClient
from rag_bot.llm.fake import FakeLLM

__all__ = ["ChatMessage", "Completion", "FakeLLM", "LLMClient"]
