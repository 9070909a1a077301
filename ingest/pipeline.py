"""Incremental, idempotent sync of a folder of documents into the vector store, with a per-file report.

A file is re-read only when its content hash changed; a changed file replaces exactly its old chunks
in one transaction, so a crash or Ctrl-C leaves every document either old or new, never half, and the
next run finishes the work. One bad file is reported with its reason and never stops the rest.
"Unchanged" means the same file, sidecar and imposed metadata (`source_hash`: a new --audience is a
change). One ingest writes a store at a time (`ingest_lock`, a PostgreSQL advisory lock).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg

from ingest.chunking import ChunkingOptions, chunk_document
from ingest.documents import iter_files, load_document, source_hash
from rag_bot.embeddings import Embedder
from rag_bot.errors import IngestError
from rag_bot.store import ChunkRecord, DocumentRecord, VectorStore

logger = logging.getLogger(__name__)

# pg_advisory_lock key of "an ingest is writing this store" (arbitrary but fixed): "rag_ings".
INGEST_LOCK = 0x7261675F696E6773


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


@dataclass
class _Prepared:
    """A document read and chunked, waiting for its batch to be embedded."""

    record: DocumentRecord
    chunks: list[ChunkRecord]
    texts: list[str]
    is_update: bool


def sync_documents(
    root: Path,
    store: VectorStore,
    embedder: Embedder,
    *,
    domain: str | None = None,
    audience: str | None = None,
    prune: bool = True,
    chunking: ChunkingOptions | None = None,
    max_file_mb: float = 50,
    max_unpacked_mb: float = 200,
    batch_chunks: int = 64,
    lock_wait_s: float = 600,
    progress: Callable[[str], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> IngestReport:
    """Bring the store in line with the files under `root` (a folder or one file).

    Chunks of consecutive documents are embedded together, about `batch_chunks` per call (small
    documents would otherwise be embedded one call each, at half the speed), and written together in
    one transaction. Reading, embedding and writing overlap (see `flush`). An interruption loses at most the
    unwritten batches, never half a document, and nothing is pruned until every file was seen and
    written. One ingest at a time per store: a second one waits up to `lock_wait_s` for the first
    (then reads what it wrote; `on_wait` hears that it waits), or stops with an IngestError saying
    one is running.
    """
    root = root.resolve()
    if not root.exists():
        raise IngestError(f"{root} does not exist. Give a folder or a file to ingest.")
    with ingest_lock(store.conn, wait_s=lock_wait_s, on_wait=on_wait):
        return _sync(root, store, embedder, domain=domain, audience=audience, prune=prune,
                     chunking=chunking or ChunkingOptions(), max_bytes=int(max_file_mb * 2**20),
                     max_unpacked=int(max_unpacked_mb * 2**20), batch_chunks=batch_chunks, progress=progress)


@contextmanager
def ingest_lock(conn: psycopg.Connection, *, wait_s: float,
                on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """A session advisory lock on the store's database: two ingests would race on the same documents.

    `conn` must stay open (and not be shared with another ingest) while the lock is held.
    """
    deadline = time.monotonic() + wait_s
    told = False
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (INGEST_LOCK,)).fetchone()[0]:  # type: ignore[index]
        holder = conn.execute(
            "SELECT a.pid, a.client_addr, a.backend_start FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s",
            (INGEST_LOCK >> 32, INGEST_LOCK & 0xFFFFFFFF)).fetchone()
        who = (f"PostgreSQL backend {holder[0]} from {holder[1] or 'this machine'}, connected "
               f"{holder[2]:%Y-%m-%d %H:%M:%S %Z}") if holder else "another process"
        if time.monotonic() >= deadline:
            raise IngestError(f"Another ingest into this store is running ({who}). Wait until it finishes and "
                              "run this one again, or let it wait longer with RAG_BOT_INGEST_LOCK_WAIT_S.")
        if not told:
            message = f"another ingest into this store is running ({who}); waiting up to {wait_s:.0f} s"
            logger.info(message)
            if on_wait:
                on_wait(message)
            told = True
        time.sleep(0.5)
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (INGEST_LOCK,))


def _sync(root: Path, store: VectorStore, embedder: Embedder, *, domain: str | None, audience: str | None,
          prune: bool, chunking: ChunkingOptions, max_bytes: int, max_unpacked: int, batch_chunks: int,
          progress: Callable[[str], None] | None) -> IngestReport:
    base = root if root.is_dir() else root.parent
    report = IngestReport()
    # Only documents under this root: "/kb/docs/" must not claim (and prune) those of "/kb/docs2/".
    if root.is_dir():
        stored = store.document_hashes(str(root) + os.sep)
    else:
        stored = {k: v for k, v in store.document_hashes(str(root)).items() if k == str(root)}
    seen: set[str] = set()
    pending: list[_Prepared] = []
    # Three stages: this thread reads and chunks, one worker embeds, one writes. The embedder (outside
    # the GIL) never waits for PostgreSQL, and PostgreSQL's HNSW inserts run beside the next batch's
    # embedding. At most one batch is being embedded and two wait to be written: memory stays bounded.
    embedding: Future[list[_Embedded]] | None = None
    first_batch = max(1, batch_chunks // 4)
    writes: deque[Future[None]] = deque()

    def flush() -> None:
        nonlocal embedding
        if pending:
            if embedding is not None:
                embedding.result()
            while len(writes) >= 2:
                writes.popleft().result()  # errors surface here, in order
            embedding = embed_pool.submit(_embed, list(pending), embedder, report)
            writes.append(write_pool.submit(_write, embedding, store, report))
            pending.clear()

    # Into an empty store the vector index is built once at the end (see VectorStore.bulk_load). On
    # leaving, the pools finish the batches in flight (each transaction is whole either way), then the
    # index is built.
    with (
        store.bulk_load(),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-embed") as embed_pool,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-write") as write_pool,
    ):
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
                if source in stored and stored[source] == source_hash(path, root=base, domain=domain,
                                                                      audience=audience):
                    report.unchanged.append(source)
                    continue
                loaded = load_document(path, root=base, domain=domain, audience=audience, max_bytes=max_bytes,
                                       max_unpacked=max_unpacked)
                chunks = chunk_document(loaded, chunking, embedder=embedder)
                if not chunks:
                    raise IngestError(f"{path.name}: no text to index after chunking.")
            except IngestError as exc:
                report.failed.append((source, str(exc)))
                continue
            except PermissionError:
                report.failed.append((source, f"{path.name}: permission denied. Let the user running the ingest "
                                              "read it (e.g. chmod o+r), or remove it from the folder."))
                continue
            except OSError as exc:
                report.failed.append((source, f"{path.name}: could not be read ({exc.strerror or exc})."))
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
            texts = [embedding_text(loaded.title, c.heading, c.text) for c in chunks]
            pending.append(_Prepared(record, chunks, texts, is_update=source in stored))
            # The first batch is small so that the embedder starts while the rest is still read.
            if sum(len(p.chunks) for p in pending) >= (batch_chunks if embedding is not None else first_batch):
                flush()
        flush()
    for write in writes:
        write.result()  # a failed write is an error of the whole run, not of one file
    gone = sorted(set(stored) - seen)
    if prune:
        store.delete_documents(gone)
        report.deleted.extend(gone)
    else:
        report.missing.extend(gone)
    logger.info("ingest %s: %s", root, report.summary())
    return report


@dataclass
class _Embedded:
    prepared: _Prepared
    vectors: np.ndarray


def _embed(batch: list[_Prepared], embedder: Embedder, report: IngestReport) -> list[_Embedded]:
    """Embed a batch of documents in one call.

    If the batch call fails, each document is embedded alone, so a text the model rejects fails only
    its own file.
    """
    try:
        vectors = embedder.embed_passages([text for doc in batch for text in doc.texts])
    except Exception as exc:  # noqa: BLE001 - retried one by one, then reported per file
        if len(batch) > 1:
            return [done for doc in batch for done in _embed([doc], embedder, report)]
        source = batch[0].record.source
        logger.exception("embedding failed for %s", source)
        report.failed.append((source, f"{Path(source).name}: embedding failed ({exc})."))
        return []
    embedded, start = [], 0
    for doc in batch:
        embedded.append(_Embedded(doc, vectors[start : start + len(doc.texts)]))
        start += len(doc.texts)
    return embedded


def _write(embedding: Future[list[_Embedded]], store: VectorStore, report: IngestReport) -> None:
    """Write one embedded batch in one transaction, once its embedding is done."""
    batch = embedding.result()
    store.upsert_documents([(e.prepared.record, e.prepared.chunks, e.vectors) for e in batch])
    for e in batch:
        report.chunks += len(e.prepared.chunks)
        (report.updated if e.prepared.is_update else report.added).append(e.prepared.record.source)
