"""Structure-aware chunking: split by Markdown headings first, then by sentences within a token budget.

llama-index's MarkdownNodeParser keeps the heading path of every section; its SentenceSplitter cuts
long sections at sentence boundaries with overlap. Each chunk carries its heading path so an answer
can cite "Returns > Laptops" and the embedding sees the section's context.

Long text without any headings (transcripts, plain-text exports, PDFs) has no structure to follow, so
it is first cut where the topic changes: llama-index's SemanticSplitterNodeParser embeds every
sentence with its neighbours and breaks where consecutive embeddings are furthest apart. Pieces over
the token budget are then cut by the SentenceSplitter as usual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from ingest.documents import LoadedDocument
from rag_bot.config import Settings
from rag_bot.embeddings import Embedder
from rag_bot.store import ChunkRecord

if TYPE_CHECKING:
    from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$", re.M)
# Tables and FAQ exports are already cut by rows / questions; topic splitting would only blur them.
_NOT_PROSE = {"csv", "xlsx", "json", "jsonl"}


@dataclass(frozen=True)
class ChunkingOptions:
    """How documents are cut (token counts use llama-index's default tokenizer, as its splitters do)."""

    chunk_size: int = 256
    overlap: int = 32
    # Topic-change splitting for documents without headings that are at least this long.
    semantic: bool = True
    semantic_min_tokens: int = 1000
    # A break goes where the distance between consecutive sentence groups is above this percentile.
    semantic_percentile: int = 95


def chunking_options(settings: Settings) -> ChunkingOptions:
    return ChunkingOptions(
        chunk_size=settings.chunk_size_tokens,
        overlap=settings.chunk_overlap_tokens,
        semantic=settings.semantic_chunking,
        semantic_min_tokens=settings.semantic_min_tokens,
        semantic_percentile=settings.semantic_breakpoint_percentile,
    )


def _heading_path(header_path: str, text: str) -> str:
    parts = [p for p in header_path.strip("/").split("/") if p]
    own = _HEADING.match(text.lstrip())
    if own:
        parts.append(own.group(2))
    return " > ".join(parts)


def wants_semantic_split(document: LoadedDocument, options: ChunkingOptions) -> bool:
    """Long prose without a single heading: the only kind of document cut by topic."""
    if not options.semantic or document.metadata.get("format") in _NOT_PROSE:
        return False
    text = "\n".join(section.text for section in document.sections)
    if _HEADING.search(text):
        return False
    from llama_index.core.utils import get_tokenizer

    return len(get_tokenizer()(text)) >= options.semantic_min_tokens


@lru_cache(maxsize=8)
def _parsers(chunk_size: int, overlap: int) -> tuple[MarkdownNodeParser, SentenceSplitter]:
    """The structure and sentence parsers, built once per setting: building them per document was
    a fifth of the chunking time of a small document."""
    # llama-index takes seconds to import: a no-op re-run, which chunks nothing, never pays for it.
    from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

    return MarkdownNodeParser(), SentenceSplitter(chunk_size=chunk_size, chunk_overlap=overlap)


def chunk_document(
    document: LoadedDocument, options: ChunkingOptions | None = None, *, embedder: Embedder | None = None
) -> list[ChunkRecord]:
    """Chunks of at most ~options.chunk_size tokens, in document order.

    `embedder` is needed only for topic-change splitting; without it every document is cut by structure.
    """
    from llama_index.core import Document

    from ingest.semantic import semantic_splitter

    options = options or ChunkingOptions()
    markdown, splitter = _parsers(options.chunk_size, options.overlap)
    semantic = (
        semantic_splitter(embedder, options.semantic_percentile)
        if embedder is not None and wants_semantic_split(document, options)
        else None
    )
    chunks: list[ChunkRecord] = []

    def add(text: str, heading: str, page: int | None) -> None:
        for piece in splitter.split_text(text):
            if piece.strip():
                chunks.append(ChunkRecord(text=piece.strip(), ordinal=len(chunks), heading=heading, page=page))

    for section in document.sections:
        if not section.text.strip():
            continue
        if semantic is not None:
            for node in semantic.get_nodes_from_documents([Document(text=section.text)]):
                add(node.get_content(), "", section.page)
            continue
        # get_nodes_from_node, not get_nodes_from_documents: the same split without llama-index's
        # per-call instrumentation and relationship bookkeeping, which cost more than the split.
        for node in markdown.get_nodes_from_node(Document(text=section.text)):
            add(node.text, _heading_path(str(node.metadata.get("header_path", "")), node.text), section.page)
    return chunks
