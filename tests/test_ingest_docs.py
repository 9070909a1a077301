from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.pipeline import sync_documents
from rag_bot.embeddings import FastE5Embedder
from rag_bot.store import VectorStore

FRONT = "---\ntitle: {title}\ndomain: {domain}\naudience: {audience}\n---\n"


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_ingest_reads_formats_and_metadata(tmp_path: Path, store: VectorStore, embedder: FastE5Embedder) -> None:
    _write(tmp_path / "hr" / "leave.md",
           FRONT.format(title="Отпуска", domain="hr", audience="internal") + "# Отпуск\n\n28 календарных дней.\n")
    _write(tmp_path / "support" / "hours.html",
           "<html><head><title>Support hours</title></head><body><h1>Hours</h1><p>Mon-Fri 9-19.</p></body></html>")
    _write(tmp_path / "support" / "zones.csv", "zone,days\nMoscow,1\nSiberia,7\n")
    _write(tmp_path / "support" / "pay.html", FRONT.format(title="Payment", domain="sales", audience="public")
           + "<!DOCTYPE html><html><body><h1>Payment</h1><p>Bank transfer or card.</p></body></html>")
    _write(tmp_path / "support" / "cp1251.txt", "Гарантия на ноутбуки составляет двенадцать месяцев.".encode("cp1251"))
    report = sync_documents(tmp_path, store, embedder)
    assert report.failed == []
    assert len(report.added) == 5
    rows = dict(store.conn.execute("SELECT title, domain || '/' || audience || '/' || language FROM documents").fetchall())
    assert rows["Отпуска"] == "hr/internal/ru"
    assert rows["Support hours"] == "support/internal/en"  # no metadata: internal is the safe default
    assert rows["Payment"] == "sales/public/en"  # front matter before <!DOCTYPE> is read, not indexed
    text = store.conn.execute("SELECT string_agg(text, ' ') FROM chunks").fetchone()[0]
    assert "Гарантия на ноутбуки" in text  # cp1251 decoded, not mojibake
    assert "zone: Siberia; days: 7" in text
    assert "audience:" not in text


def test_ingest_reports_bad_files_and_keeps_the_rest(
    tmp_path: Path, store: VectorStore, embedder: FastE5Embedder
) -> None:
    _write(tmp_path / "good.md", "# Good\n\nA perfectly fine document about delivery.")
    _write(tmp_path / "empty.md", "")
    _write(tmp_path / "binary.txt", b"\x00\x01\x02\x89PNG" * 100)
    _write(tmp_path / "broken.pdf", b"%PDF-1.4 this is not really a pdf")
    _write(tmp_path / "broken.docx", b"PK\x03\x04 not a zip at all")
    os.symlink(tmp_path, tmp_path / "loop")
    report = sync_documents(tmp_path, store, embedder)
    assert [Path(s).name for s in report.added] == ["good.md"]
    reasons = {Path(source).name: reason for source, reason in report.failed}
    assert "empty" in reasons["empty.md"]
    assert "binary" in reasons["binary.txt"]
    assert "PDF" in reasons["broken.pdf"]
    assert "DOCX" in reasons["broken.docx"]
    assert "symlink loop" in reasons["loop"]


def test_ingest_is_incremental_and_prunes_deleted_files(
    tmp_path: Path, store: VectorStore, embedder: FastE5Embedder
) -> None:
    a = _write(tmp_path / "a.md", "# A\n\nFirst version.")
    _write(tmp_path / "b.md", "# B\n\nAnother document.")
    first = sync_documents(tmp_path, store, embedder)
    assert len(first.added) == 2
    again = sync_documents(tmp_path, store, embedder)
    assert len(again.unchanged) == 2 and again.chunks == 0
    a.write_text("# A\n\nSecond version, changed.", encoding="utf-8")
    (tmp_path / "b.md").unlink()
    changed = sync_documents(tmp_path, store, embedder, prune=False)
    assert [Path(s).name for s in changed.updated] == ["a.md"]
    assert [Path(s).name for s in changed.missing] == ["b.md"]
    pruned = sync_documents(tmp_path, store, embedder)
    assert [Path(s).name for s in pruned.deleted] == ["b.md"]
    texts = [r[0] for r in store.conn.execute("SELECT text FROM chunks").fetchall()]
    assert texts == ["# A\n\nSecond version, changed."]


def test_ingest_of_missing_path_is_a_clear_error(tmp_path: Path, store: VectorStore, embedder: FastE5Embedder) -> None:
    from rag_bot.errors import IngestError

    with pytest.raises(IngestError, match="does not exist"):
        sync_documents(tmp_path / "nope", store, embedder)
