"""The docs path: a question -> the chunks its asker may see -> a prompt with numbered sources.

    retrieval.py  audience/domain-filtered hybrid search in the store, context packing, citations
    reranking.py  optional cross-encoder reranker over an HTTP /rerank server
    answer.py     prepare_answer(): retrieval + the prompt; the turn runner streams the LLM's text

Typical use::

    from rag_bot.documents import prepare_answer
    prepared = prepare_answer(question, store=store, embedder=embedder, audience="public", language="ru")
"""

from rag_bot.documents.answer import PreparedAnswer, build_messages, prepare_answer
from rag_bot.documents.retrieval import Citation, Reranker, RetrievalOptions, pack_context, search_chunks

__all__ = [
    "Citation",
    "PreparedAnswer",
    "Reranker",
    "RetrievalOptions",
    "build_messages",
    "pack_context",
    "prepare_answer",
    "search_chunks",
]
