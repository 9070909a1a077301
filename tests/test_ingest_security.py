"""Ingest holes an outside attack found: a corrected audience ignored, symlinks leaving the root, zip
bombs, and two ingests at once. Real PostgreSQL, the real embedder, real DOCX/XLSX files."""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import docx
import pytest
from openpyxl import Workbook

from ingest.pipeline import sync_documents
from rag_bot.config import PROJECT_ROOT
from rag_bot.embeddings import FastE5Embedder
from rag_bot.errors import IngestError
from rag_bot.profiles import get_profiles
from rag_bot.retrieval import search_chunks
from rag_bot.store import VectorStore

SALARIES = "# Salary bands 2025\n\nSenior engineers earn 410 000 roubles a month; the bonus pool is 18 %.\n"
QUESTION = "How much do senior engineers earn a month?"


def _support_sources(store: VectorStore, embedder: FastE5Embedder) -> set[str]:
    """What the public support profile (profiles.yaml) can retrieve for the question."""
    audience = get_profiles(PROJECT_ROOT / "profiles.yaml").profiles["support"].audience
    return {hit.source for hit in search_chunks(QUESTION, store=store, embedder=embedder, audience=audience, top_k=5)}


def test_reingest_with_a_new_audience_flips_it_and_support_no_longer_retrieves_it(
    tmp_path: Path, store: VectorStore, embedder: FastE5Embedder
) -> None:
    doc = tmp_path / "hr" / "salaries.md"
    doc.parent.mkdir()
    doc.write_text(SALARIES, encoding="utf-8")
    first = sync_documents(tmp_path, store, embedder, audience="public")
    assert first.added == [str(doc)]
    assert str(doc) in _support_sources(store, embedder)

    corrected = sync_documents(tmp_path, store, embedder, audience="internal")
    assert corrected.updated == [str(doc)] and corrected.unchanged == []
    row = store.conn.execute("SELECT audience FROM documents WHERE source = %s", (str(doc),)).fetchone()
    assert row is not None and row[0] == "internal"
    assert str(doc) not in _support_sources(store, embedder)
    # Same overrides again: now it really is unchanged.
    assert sync_documents(tmp_path, store, embedder, audience="internal").unchanged == [str(doc)]
    # A new --domain is a change too.
    assert sync_documents(tmp_path, store, embedder, audience="internal", domain="finance").updated == [str(doc)]


def test_symlink_leaving_the_root_is_skipped_with_a_reason(
    tmp_path: Path, store: VectorStore, embedder: FastE5Embedder
) -> None:
    root, outside = tmp_path / "kb", tmp_path / "private"
    (root / "support").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.md").write_text(SALARIES, encoding="utf-8")
    (root / "support" / "hours.md").write_text("# Hours\n\nMon-Fri 9-19.\n", encoding="utf-8")
    (root / "support" / "leak.md").symlink_to(outside / "secret.md")
    (root / "linked_folder").symlink_to(outside, target_is_directory=True)
    (root / "support" / "inside.md").symlink_to(root / "support" / "hours.md")  # stays inside: fine

    for _ in range(2):  # was: re-ingested on every run, stored outside the root, never pruned
        report = sync_documents(root, store, embedder)
        reasons = dict(report.failed)
        assert set(reasons) == {str(root / "support" / "leak.md"), str(root / "linked_folder")}
        assert all("outside" in reason and "skipped" in reason for reason in reasons.values())
    stored = store.document_hashes()
    assert set(stored) == {str(root / "support" / "hours.md")}


def _bomb_member(archive: Path, megabytes: int) -> None:
    """Add a member of `megabytes` of zeros (deflated to a few KB) to an Office file."""
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_DEFLATED) as zf, \
            zf.open("customXml/item9.xml", "w") as fh:
        block = b"\0" * 2**20
        for _ in range(megabytes):
            fh.write(block)


def _docx(path: Path) -> Path:
    document = docx.Document()
    document.add_heading("Returns", level=1)
    document.add_paragraph("Goods can be returned within 14 days.")
    document.save(str(path))
    return path


def _xlsx(path: Path) -> Path:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["product", "price"])
    sheet.append(["laptop", 1000])
    book.save(str(path))
    return path


@pytest.mark.parametrize("make", [_docx, _xlsx], ids=["docx", "xlsx"])
def test_zip_bomb_office_file_is_refused_by_its_unpacked_size(
    make: Any, tmp_path: Path, store: VectorStore, embedder: FastE5Embedder
) -> None:
    good = make(tmp_path / f"good.{make.__name__[1:]}")
    bomb = make(tmp_path / f"bomb.{make.__name__[1:]}")
    _bomb_member(bomb, 64)
    assert bomb.stat().st_size < 2**20  # small on disk: the file-size limit alone lets it through
    report = sync_documents(tmp_path, store, embedder, max_unpacked_mb=16)
    assert report.added == [str(good)]
    reasons = dict(report.failed)
    assert list(reasons) == [str(bomb)]
    assert "RAG_BOT_INGEST_MAX_UNPACKED_MB" in reasons[str(bomb)] and "unpacks to 6" in reasons[str(bomb)]


class BlockingEmbedder:
    """The real embedder, held at its first call until `release` is set: an ingest caught mid-way."""

    def __init__(self, inner: FastE5Embedder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.entered, self.release = threading.Event(), threading.Event()

    def embed_passages(self, texts: Sequence[str]) -> Any:
        self.entered.set()
        assert self.release.wait(60), "the test never released the first ingest"
        return self.inner.embed_passages(texts)

    def embed_queries(self, texts: Sequence[str]) -> Any:
        return self.inner.embed_queries(texts)


def test_second_concurrent_ingest_waits_or_says_one_is_running(
    tmp_path: Path, fresh_db_url: str, store: VectorStore, embedder: FastE5Embedder
) -> None:
    for n in range(3):
        (tmp_path / f"doc{n}.md").write_text(f"# Doc {n}\n\nText number {n}.\n", encoding="utf-8")
    blocking = BlockingEmbedder(embedder)
    first: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: first.update(report=sync_documents(tmp_path, store, blocking)))
    worker.start()
    other = VectorStore(fresh_db_url, embedder_name=embedder.name, dim=embedder.dim)  # another process's connection
    try:
        assert blocking.entered.wait(60)
        with pytest.raises(IngestError, match="Another ingest into this store is running") as busy:
            sync_documents(tmp_path, other, embedder, lock_wait_s=1)
        assert "RAG_BOT_INGEST_LOCK_WAIT_S" in str(busy.value)

        heard: list[str] = []
        threading.Timer(1.5, blocking.release.set).start()
        second = sync_documents(tmp_path, other, embedder, lock_wait_s=60, on_wait=heard.append)
        worker.join(60)
        assert len(first["report"].added) == 3
        # It waited, then saw the first ingest's work: nothing to write twice, no unique-key failure.
        assert len(heard) == 1 and "waiting" in heard[0]
        assert len(second.unchanged) == 3 and second.failed == [] and second.added == []
    finally:
        blocking.release.set()
        worker.join(60)
        other.close()


def test_pdf_whose_text_unpacks_beyond_the_limit_is_refused(
    tmp_path: Path, store: VectorStore, embedder: FastE5Embedder
) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=10)
    for page in range(8):
        pdf.add_page()
        pdf.multi_cell(0, 5, f"Page {page}. " + "Delivery terms and warranty. " * 120)
    pdf.output(str(tmp_path / "long.pdf"))
    limit_mb = 8 * 1024 / 2**20  # 8 KB of text: a few pages fit, eight do not
    report = sync_documents(tmp_path, store, embedder, max_unpacked_mb=limit_mb)
    reasons = dict(report.failed)
    assert list(reasons) == [str(tmp_path / "long.pdf")]
    assert "RAG_BOT_INGEST_MAX_UNPACKED_MB" in reasons[str(tmp_path / "long.pdf")]
    assert sync_documents(tmp_path, store, embedder).added == [str(tmp_path / "long.pdf")]  # fine under 200 MB
