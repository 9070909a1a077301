from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

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
    query = "SELECT title, domain || '/' || audience || '/' || language FROM documents"
    rows = dict(store.conn.execute(query).fetchall())
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


def test_ingest_of_one_folder_never_prunes_a_sibling_folder_with_a_similar_name(
    tmp_path: Path, store: VectorStore, embedder: FastE5Embedder
) -> None:
    _write(tmp_path / "kb_docs" / "a.md", "# A\n\nIn kb_docs.")
    _write(tmp_path / "kb_docs2" / "b.md", "# B\n\nIn kb_docs2.")
    _write(tmp_path / "kbXdocs" / "c.md", "# C\n\nIn kbXdocs ('_' is a wildcard in SQL LIKE).")
    sync_documents(tmp_path / "kb_docs2", store, embedder)
    sync_documents(tmp_path / "kbXdocs", store, embedder)
    report = sync_documents(tmp_path / "kb_docs", store, embedder)
    assert report.deleted == [] and [Path(s).name for s in report.added] == ["a.md"]
    single = sync_documents(tmp_path / "kb_docs" / "a.md", store, embedder)
    assert single.deleted == [] and [Path(s).name for s in single.unchanged] == ["a.md"]
    assert store.count_chunks() == 3


def test_ingest_of_missing_path_is_a_clear_error(tmp_path: Path, store: VectorStore, embedder: FastE5Embedder) -> None:
    from rag_bot.errors import IngestError

    with pytest.raises(IngestError, match="does not exist"):
        sync_documents(tmp_path / "nope", store, embedder)


# -- crash and resume ---------------------------------------------------------------------------
class InterruptingEmbedder:
    """The real embedder, interrupted as by Ctrl-C when asked to embed a text containing `marker`.

    With `during_write=True` the interruption comes later: the vectors are returned, and converting
    the last one raises, which happens inside the store's write transaction, after the old version of
    the document was deleted.
    """

    def __init__(self, inner: FastE5Embedder, marker: str, *, during_write: bool = False) -> None:
        self.inner, self.marker, self.during_write = inner, marker, during_write
        self.name, self.dim = inner.name, inner.dim

    def embed_passages(self, texts: Sequence[str]) -> Any:
        if not any(self.marker in text for text in texts):
            return self.inner.embed_passages(texts)
        if not self.during_write:
            raise KeyboardInterrupt
        return [*self.inner.embed_passages(texts)[:-1], _VectorThatInterrupts()]

    def embed_queries(self, texts: Sequence[str]) -> Any:
        return self.inner.embed_queries(texts)


class _VectorThatInterrupts:
    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        raise KeyboardInterrupt


def _three_section_doc(n: int) -> str:
    return "\n\n".join(f"# Part {p} of document {n}\n\nmarker-{n} says something about topic {p}." for p in range(3))


def _store_state(store: VectorStore) -> dict[str, tuple[int, Any, list[int]]]:
    """source file name -> (document id, ingested_at, chunk ordinals), for every stored document."""
    rows = store.conn.execute(
        "SELECT d.source, d.id, d.ingested_at, array_agg(c.ordinal ORDER BY c.ordinal) "
        "FROM documents d LEFT JOIN chunks c ON c.document_id = d.id GROUP BY d.id"
    ).fetchall()
    return {Path(source).name: (doc_id, at, list(ordinals)) for source, doc_id, at, ordinals in rows}


# Three chunks per document; the first batch is a quarter of batch_chunks. With 8: [doc0], then
# [doc1, doc2, doc3], whose embedding is interrupted: doc1 and doc2 are lost with it, whole.
@pytest.mark.parametrize(("batch_chunks", "written_before_interrupt"), [(1, 3), (8, 1)])
def test_ingest_interrupted_midway_keeps_whole_documents_and_the_next_run_finishes(
    tmp_path: Path, store: VectorStore, embedder: FastE5Embedder, batch_chunks: int, written_before_interrupt: int
) -> None:
    names = [f"doc{n}.md" for n in range(6)]
    for n, name in enumerate(names):
        _write(tmp_path / name, _three_section_doc(n))
    with pytest.raises(KeyboardInterrupt):
        sync_documents(tmp_path, store, InterruptingEmbedder(embedder, "marker-3"), batch_chunks=batch_chunks)
    before = _store_state(store)
    # Only whole documents, the ones whose batch was written before the interruption, in file order.
    assert sorted(before) == names[:written_before_interrupt]
    assert all(ordinals == [0, 1, 2] for _, _, ordinals in before.values())

    report = sync_documents(tmp_path, store, embedder, batch_chunks=batch_chunks)
    assert report.failed == []
    assert sorted(Path(s).name for s in report.unchanged) == names[:written_before_interrupt]
    assert sorted(Path(s).name for s in report.added) == names[written_before_interrupt:]
    after = _store_state(store)
    assert sorted(after) == names
    assert all(after[name] == before[name] for name in before)  # same rows: not rewritten
    assert all(ordinals == [0, 1, 2] for _, _, ordinals in after.values())
    assert store.count_chunks() == 3 * len(names)  # no duplicates


def test_ingest_interrupted_while_writing_a_changed_file_keeps_its_old_version(
    tmp_path: Path, store: VectorStore, embedder: FastE5Embedder
) -> None:
    doc = _write(tmp_path / "policy.md", "# Policy\n\nFirst version of the policy.")
    sync_documents(tmp_path, store, embedder)
    doc.write_text(_three_section_doc(7), encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        sync_documents(tmp_path, store, InterruptingEmbedder(embedder, "marker-7", during_write=True))
    texts = [row[0] for row in store.conn.execute("SELECT text FROM chunks ORDER BY ordinal").fetchall()]
    assert texts == ["# Policy\n\nFirst version of the policy."]  # the old version, whole

    report = sync_documents(tmp_path, store, embedder)
    assert [Path(s).name for s in report.updated] == ["policy.md"]
    texts = [row[0] for row in store.conn.execute("SELECT text FROM chunks ORDER BY ordinal").fetchall()]
    assert len(texts) == 3 and all("marker-7" in text for text in texts)


# -- bad input ----------------------------------------------------------------------------------
@pytest.fixture
def settings_on_store(store: VectorStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[VectorStore]:
    """The CLI's settings pointed at the test store (its database URL through the environment)."""
    from rag_bot.config import get_settings

    monkeypatch.setenv("RAG_BOT_DATABASE_URL", store._url)
    get_settings.cache_clear()
    yield store
    get_settings.cache_clear()


def test_ingest_command_skips_a_file_over_the_size_limit_setting(
    tmp_path: Path, settings_on_store: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from rag_bot.cli import main

    _write(tmp_path / "good.md", "# Good\n\nA small document about delivery times.")
    with (tmp_path / "huge.txt").open("wb") as handle:
        handle.truncate(3 * 1024 * 1024)  # sparse: 3 MB on paper, nothing written to disk
    monkeypatch.setenv("RAG_BOT_INGEST_MAX_FILE_MB", "2")
    result = CliRunner().invoke(main, ["ingest", "docs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "added 1," in result.output and "failed 1" in result.output
    assert "huge.txt: 3.0 MB is over the 2 MB limit (RAG_BOT_INGEST_MAX_FILE_MB)" in result.output
    sources = [row[0] for row in settings_on_store.conn.execute("SELECT source FROM documents").fetchall()]
    assert [Path(s).name for s in sources] == ["good.md"]


def test_ingest_reports_password_protected_and_legacy_office_files(
    tmp_path: Path, store: VectorStore, embedder: FastE5Embedder
) -> None:
    import io

    import docx
    from msoffcrypto.format.ooxml import OOXMLFile

    document = docx.Document()
    document.add_paragraph("Salaries of the board for 2025.")
    plain = io.BytesIO()
    document.save(plain)
    plain.seek(0)
    with (tmp_path / "locked.docx").open("wb") as locked:
        OOXMLFile(plain).encrypt("secret", locked)  # what Word writes for "Encrypt with password"
    plain.seek(0)
    _write(tmp_path / "open.docx", plain.read())
    # An OLE file without an encrypted package: an old .doc renamed to .docx.
    _write(tmp_path / "old.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 1024)
    report = sync_documents(tmp_path, store, embedder)
    assert [Path(s).name for s in report.added] == ["open.docx"]
    reasons = {Path(source).name: reason for source, reason in report.failed}
    assert reasons["locked.docx"] == "locked.docx: the file is password-protected. Save a copy without a password."
    assert "old Word (.doc) file" in reasons["old.docx"]


# Runs sync_documents in a child process that drops to another user once it is connected to the store
# and has read one warm-up file: the server's socket, the embedder's cached weights and the Python
# installation may all be under root's home, closed to that user.
_INGEST_AS_USER = """
import json, os, sys, tempfile
from pathlib import Path
from ingest.chunking import chunk_document
from ingest.documents import load_document
from ingest.pipeline import sync_documents
from rag_bot.config import Settings
from rag_bot.embeddings import FastE5Embedder
from rag_bot.store import VectorStore

url, folder, uid, gid = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
embedder = FastE5Embedder(Settings().cache_dir / "embeddings")
store = VectorStore(url, embedder_name=embedder.name, dim=embedder.dim)
store.conn
warm = Path(tempfile.mkdtemp()) / "warm.md"
warm.write_text("# Warm-up\\n\\nLoads the lazily imported modules.", encoding="utf-8")
embedder.embed_passages([c.text for c in chunk_document(load_document(warm, root=warm.parent))])
if os.geteuid() != uid:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
report = sync_documents(folder, store, embedder)
print(json.dumps({"uid": os.geteuid(), "added": report.added, "failed": report.failed}))
"""


@pytest.mark.slow
def test_ingest_reports_unreadable_files_and_folders(store: VectorStore) -> None:
    import json
    import pwd
    import shutil
    import subprocess
    import sys
    import tempfile

    if os.geteuid() == 0:
        # root reads any file whatever its mode, so the ingest runs as an unprivileged user.
        try:
            user = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and there is no 'nobody' user to drop to, so chmod 000 cannot be tested")
        uid, gid = user.pw_uid, user.pw_gid
    else:
        uid, gid = os.getuid(), os.getgid()
    folder = Path(tempfile.mkdtemp(prefix="rag_bot_perm_"))  # pytest's tmp_path is closed to other users
    try:
        folder.chmod(0o755)
        _write(folder / "readable.md", "# Readable\n\nEveryone may read this.").chmod(0o644)
        _write(folder / "secret.md", "# Secret\n\nOnly the owner may read this.").chmod(0o000)
        _write(folder / "private" / "inside.md", "# Inside\n\nIn a closed folder.")
        (folder / "private").chmod(0o000)
        child = subprocess.run(
            [sys.executable, "-c", _INGEST_AS_USER, store._url, str(folder), str(uid), str(gid)],
            capture_output=True, text=True, timeout=300, cwd=str(Path(__file__).resolve().parent.parent),
        )
        assert child.returncode == 0, child.stderr[-3000:]
        report = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        (folder / "private").chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)
    assert report["uid"] == uid
    assert [Path(s).name for s in report["added"]] == ["readable.md"]
    reasons = {Path(source).name: reason for source, reason in report["failed"]}
    assert reasons["secret.md"].startswith("secret.md: permission denied.")
    assert reasons["private"] == "cannot be read (Permission denied)"
