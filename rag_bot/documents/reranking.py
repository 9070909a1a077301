"""Optional reranking of retrieved chunks by a cross-encoder served over HTTP.

vLLM serves cross-encoder rerankers (e.g. BAAI/bge-reranker-v2-m3, multilingual) behind the
Jina/Cohere-style `POST /rerank` endpoint: `{model, query, documents, top_n}` in,
`{results: [{index, relevance_score}]}` out. Off by default: on a 2-core CPU a cross-encoder over 20
passages costs seconds; on a GPU host it is milliseconds. A failing reranker never fails the answer:
the fused hybrid order is kept and a warning logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx

from rag_bot.store import SearchHit

logger = logging.getLogger(__name__)


class HttpReranker:
    """Reranker over a `/rerank` endpoint (vLLM, or any Jina/Cohere-compatible server)."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        self.url = base_url.rstrip("/") + "/rerank"
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)

    def rerank(self, question: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        """The hits best first by the cross-encoder; the input order when the server fails."""
        if len(hits) < 2:
            return list(hits)
        payload = {"model": self.model, "query": question, "documents": [h.text for h in hits],
                   "top_n": len(hits)}
        try:
            response = self._client.post(self.url, json=payload)
            response.raise_for_status()
            results = response.json()["results"]
            order = [int(r["index"]) for r in sorted(results, key=lambda r: -float(r["relevance_score"]))]
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            logger.warning("reranker at %s failed (%s); keeping the hybrid order", self.url, exc)
            return list(hits)
        ranked = [hits[i] for i in order if 0 <= i < len(hits)]
        seen = set(order)
        return ranked + [h for i, h in enumerate(hits) if i not in seen]

    def close(self) -> None:
        self._client.close()
