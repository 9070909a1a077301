"""Incremental, idempotent sync of a folder of documents into the vector store, with a per-file report.

A file is re-read only when its content hash changed; a changed file replaces exactly its old chunks
in one transaction, so a crash or Ctrl-C leaves every document either old or new, never half, and the
next run finishes the work. One bad file is reported with its reason and never stops the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ingest.chunking import chunk_document
from ingest.documents import file_hash, iter_files, load_document
from rag_bot.embeddings import Embedder
from rag_bot.errors import IngestError
from rag_bot.store import DocumentRecord, VectorStore

logger = logging.getLogger(__name__)


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # gone from disk, kept because prune=False
    failed: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0

    def summary(self) -> str:
        return (
            f"added {len(self.added)}, updated {len(self.updated)}, unchanged {len(self.unchanged)}, "
            f"deleted {len(self.deleted)}, failed {len(self.failed)} ({self.chunks} chunks written)"
        )


def embedding_text(title: str, heading: str, text: str) -> str:
    """What the embedder sees: the chunk with its document title and section, for context."""
    context = " > ".join(part for part in (title, heading) if part)
    return f"{context}\n{text}" if context else text


def sync_documents(
    root: Path,
    store: VectorStore,
    embedder: Embedder,
    *,
    domain: str | None = None,
    audience: str | None = None,
    prune: bool = True,
    chunk_size: int = 256,
    overlap: int = 32,
    max_file_mb: int = 50,
    progress: Callable[[str], None] | None = None,
) -> IngestReport:
    """Bring the store in line with the files under `root` (a folder or one file)."""
    root = root.resolve()
    if not root.exists():
        raise IngestError(f"{root} does not exist. Give a folder or a file to ingest.")
    base = root if root.is_dir() else root.parent
    report = IngestReport()
    stored = store.document_hashes(str(root))
    seen: set[str] = set()
    for item in iter_files(root):
        if isinstance(item, tuple):
            report.failed.append((str(item[0]), item[1]))
            continue
        path = item
        source = str(path.resolve())
        seen.add(source)
        if progress:
            progress(path.name)
        try:
            if stored.get(source) == file_hash(path):
                report.unchanged.append(source)
                continue
            loaded = load_document(path, root=base, domain=domain, audience=audience, max_bytes=max_file_mb * 1024 * 1024)
            chunks = chunk_document(loaded, chunk_size=chunk_size, overlap=overlap)
            if not chunks:
                raise IngestError(f"{path.name}: no text to index after chunking.")
            vectors = embedder.embed_passages([embedding_text(loaded.title, c.heading, c.text) for c in chunks])
        except IngestError as exc:
            report.failed.append((source, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - a reader library may raise anything; skip and report
            logger.exception("unexpected failure reading %s", path)
            report.failed.append((source, f"{path.name}: could not be read ({type(exc).__name__}: {exc})."))
            continue
        record = DocumentRecord(
            source=source,
            title=loaded.title,
            domain=loaded.domain,
            audience=loaded.audience,
            language=loaded.language,
            content_hash=loaded.content_hash,
            metadata=loaded.metadata,
        )
        store.upsert_document(record, chunks, vectors)
        report.chunks += len(chunks)
        (report.updated if source in stored else report.added).append(source)
    gone = sorted(set(stored) - seen)
    if prune:
        store.delete_documents(gone)
        report.deleted.extend(gone)
    else:
        report.missing.extend(gone)
    logger.info("ingest %s: %s", root, report.summary())
    return report
