"""HttpReranker against a local server speaking vLLM's `/rerank` protocol (a stub scorer stands in
for the cross-encoder), and its place in hybrid search."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rag_bot.documents.reranking import HttpReranker
from rag_bot.documents.retrieval import search_chunks
from rag_bot.embeddings import Embedder
from rag_bot.store import ChunkRecord, DocumentRecord, SearchHit, VectorStore


class _RerankHandler(BaseHTTPRequestHandler):
    """Scores a document by how many query words it contains; records what it was sent."""

    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **body})
        words = set(body["query"].lower().split())
        results = [{"index": i, "relevance_score": float(len(words & set(doc.lower().split())))}
                   for i, doc in enumerate(body["documents"])]
        data = json.dumps({"id": "x", "results": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rerank_url() -> Iterator[str]:
    _RerankHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RerankHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _hit(i: int, text: str) -> SearchHit:
    return SearchHit(chunk_id=i, text=text, source=f"s{i}", title="t", domain="d", audience="public",
                     heading="", page=None, ordinal=0, score=1.0 / (i + 1))


def test_hits_come_back_in_the_cross_encoders_order(rerank_url: str) -> None:
    hits = [_hit(0, "office hours"), _hit(1, "laptop return period is fourteen days"), _hit(2, "return a laptop")]
    reranker = HttpReranker(rerank_url, "bge-reranker")
    try:
        ranked = reranker.rerank("laptop return period", hits)
    finally:
        reranker.close()
    assert [h.chunk_id for h in ranked] == [1, 2, 0]
    sent = _RerankHandler.requests[0]
    assert sent["path"] == "/v1/rerank" and sent["model"] == "bge-reranker" and len(sent["documents"]) == 3


def test_a_dead_reranker_keeps_the_hybrid_order() -> None:
    hits = [_hit(0, "a"), _hit(1, "b")]
    reranker = HttpReranker("http://127.0.0.1:9/v1", "m", timeout_s=2)
    try:
        assert reranker.rerank("q", hits) == hits
    finally:
        reranker.close()


def test_search_reranks_the_wider_candidate_set_and_keeps_top_k(
    store: VectorStore, embedder: Embedder, rerank_url: str
) -> None:
    texts = [f"Policy note {i} about office plants and watering." for i in range(8)]
    texts.append("The laptop return period is fourteen calendar days.")
    for i, text in enumerate(texts):
        record = DocumentRecord(source=f"doc{i}.md", title=f"Doc {i}", domain="support", audience="public",
                                language="en", content_hash=str(i))
        store.upsert_document(record, [ChunkRecord(text=text, ordinal=0)], embedder.embed_passages([text]))
    reranker = HttpReranker(rerank_url, "m")
    try:
        hits = search_chunks("laptop return period fourteen days", store=store, embedder=embedder,
                             audience="public", top_k=2, reranker=reranker)
    finally:
        reranker.close()
    assert len(hits) == 2 and "fourteen" in hits[0].text
    assert len(_RerankHandler.requests[0]["documents"]) == 9  # all candidates, not just top_k
