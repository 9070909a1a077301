"""Structure-aware chunking: split by Markdown headings first, then by sentences within a token budget.

llama-index's MarkdownNodeParser keeps the heading path of every section; its SentenceSplitter cuts
long sections at sentence boundaries with overlap. Each chunk carries its heading path so an answer
can cite "Returns > Laptops" and the embedding sees the section's context.
"""

from __future__ import annotations

import re

from llama_index.core import Document
from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

from ingest.documents import LoadedDocument
from rag_bot.store import ChunkRecord

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$", re.M)


def _heading_path(header_path: str, text: str) -> str:
    parts = [p for p in header_path.strip("/").split("/") if p]
    own = _HEADING.match(text.lstrip())
    if own:
        parts.append(own.group(2))
    return " > ".join(parts)


def chunk_document(document: LoadedDocument, *, chunk_size: int = 256, overlap: int = 32) -> list[ChunkRecord]:
    """Chunks of at most ~chunk_size tokens, in document order."""
    markdown = MarkdownNodeParser()
    splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=overlap)
    chunks: list[ChunkRecord] = []
    for section in document.sections:
        if not section.text.strip():
            continue
        nodes = markdown.get_nodes_from_documents([Document(text=section.text)])
        for node in nodes:
            heading = _heading_path(str(node.metadata.get("header_path", "")), node.text)
            for piece in splitter.split_text(node.text):
                if piece.strip():
                    chunks.append(ChunkRecord(text=piece.strip(), ordinal=len(chunks), heading=heading, page=section.page))
    return chunks
