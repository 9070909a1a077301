"""Readers: a file on disk -> LoadedDocument (Markdown-like text + metadata), one file at a time.

Every format is turned into text with Markdown headings, so one structure-aware chunker serves all.
A reader raises IngestError with a reason a person can act on; the pipeline reports it and goes on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rag_bot.errors import IngestError
from rag_bot.language import detect_language

AUDIENCES = ("public", "internal")
TEXT_SUFFIXES = {".md", ".markdown", ".txt"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | {".html", ".htm", ".pdf", ".docx", ".csv", ".xlsx", ".json", ".jsonl"}
META_SUFFIX = ".meta.yaml"
DEFAULT_MAX_UNPACKED = 200 * 1024 * 1024
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)


@dataclass
class Section:
    """A run of text; `page` is set for PDFs so answers can cite it."""

    text: str
    page: int | None = None


@dataclass
class LoadedDocument:
    source: str
    title: str
    domain: str
    audience: str
    language: str
    content_hash: str
    sections: list[Section]
    metadata: dict[str, Any] = field(default_factory=dict)


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    meta = path.with_name(path.name + META_SUFFIX)
    if meta.exists():
        digest.update(meta.read_bytes())
    return digest.hexdigest()


def folder_domain(path: Path, root: Path) -> str | None:
    """The domain a file gets from its first folder under the ingested root (docs/<domain>/...)."""
    relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    return relative.parts[0] if len(relative.parts) > 1 else None


def source_hash(path: Path, *, root: Path, domain: str | None = None, audience: str | None = None) -> str:
    """What decides "unchanged": the file and its sidecar, plus what this run imposes on its metadata.

    The CLI's --domain/--audience and the folder domain are not in the file, yet they decide who may
    retrieve it: a re-run with `--audience internal` must re-write a document stored as public.
    """
    imposed = json.dumps({"domain": domain, "audience": audience, "folder": folder_domain(path, root)},
                         sort_keys=True)
    return hashlib.sha256(f"{file_hash(path)}\n{imposed}".encode()).hexdigest()


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 first, then charset detection (cp1251 is common for Russian files); binary is refused."""
    if b"\x00" in data[:8192]:
        raise IngestError(f"{name}: looks like a binary file, not text. Remove it or give it the right extension.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise IngestError(f"{name}: the text encoding could not be detected. Save it as UTF-8.")
    return str(best)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise IngestError(f"the front matter is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise IngestError("the front matter must be a YAML mapping (key: value lines)")
    return meta, text[match.end():]


# -- format readers: path -> (sections, metadata found inside the file) ---------------------------
def _read_text(path: Path) -> tuple[list[Section], dict[str, Any]]:
    meta, body = split_front_matter(decode_text(path.read_bytes(), path.name))
    return [Section(body)], meta


def _read_html(path: Path) -> tuple[list[Section], dict[str, Any]]:
    from bs4 import BeautifulSoup

    # Exported pages may carry YAML front matter before <!DOCTYPE>, like Markdown files.
    front, html = split_front_matter(decode_text(path.read_bytes(), path.name))
    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "nav", "footer"]):
        tag.decompose()
    meta: dict[str, Any] = {}
    if soup.title and soup.title.string:
        meta["title"] = soup.title.string.strip()
    meta.update(front)
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading.replace_with(f"\n\n{'#' * level} {heading.get_text(' ', strip=True)}\n\n")
    for item in soup.find_all("li"):
        item.insert_before("\n- ")
    text = re.sub(r"\n{3,}", "\n\n", soup.get_text())
    return [Section(text)], meta


def _read_pdf(path: Path, max_unpacked: int = DEFAULT_MAX_UNPACKED) -> tuple[list[Section], dict[str, Any]]:
    """Pages as sections. pypdf caps each decompressed stream (75 MB); the sum of the text is capped here."""
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise IngestError(f"{path.name}: the PDF is password-protected. Save an unprotected copy.")
        sections, unpacked = [], 0
        for number, page in enumerate(reader.pages, 1):
            text = page.extract_text() or ""
            unpacked += len(text.encode("utf-8"))
            if unpacked > max_unpacked:
                what = f"over {max_unpacked / 2**20:g} MB of text by page {number}"
                raise IngestError(_too_large_unpacked(path, what, max_unpacked))
            sections.append(Section(text, page=number))
        title = (reader.metadata.title if reader.metadata else None) or ""
    except LimitReachedError as exc:
        raise IngestError(_too_large_unpacked(path, f"a compressed stream over pypdf's limit ({exc})",
                                              max_unpacked)) from exc
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise IngestError(f"{path.name}: the PDF is damaged or unreadable ({exc}).") from exc
    if not any(s.text.strip() for s in sections):
        raise IngestError(f"{path.name}: the PDF has no text layer (a scan?). OCR it first.")
    return sections, {"title": title} if title else {}


# DOCX and XLSX are zip files. A password-protected one is an OLE compound file instead (the format of
# old .doc/.xls files) holding an "EncryptedPackage" stream; its directory names are UTF-16.
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")


def _too_large_unpacked(path: Path, what: str, limit: int) -> str:
    return (f"{path.name}: unpacks to {what}, more than the {limit / 2**20:g} MB limit "
            "(RAG_BOT_INGEST_MAX_UNPACKED_MB): a zip bomb, or split the document.")


def check_unpacked_zip(path: Path, max_unpacked: int) -> None:
    """Refuse a DOCX/XLSX whose members unpack to more than `max_unpacked` bytes, before any reader opens it.

    The sizes come from the zip's directory; Python's zipfile never returns more than a member's
    declared size (and checks its CRC), so a lying header cannot unpack further.
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        return  # the reader reports a damaged file in its own words
    if total > max_unpacked:
        raise IngestError(_too_large_unpacked(path, f"{total / 2**20:.0f} MB", max_unpacked))


def _refuse_ole_container(path: Path, old_format: str) -> None:
    data = path.read_bytes()
    if not data.startswith(_OLE_MAGIC):
        return
    if _ENCRYPTED_PACKAGE in data:
        raise IngestError(f"{path.name}: the file is password-protected. Save a copy without a password.")
    raise IngestError(f"{path.name}: this is an old {old_format} file with a new extension. Save it as {path.suffix}.")


def _read_docx(path: Path) -> tuple[list[Section], dict[str, Any]]:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    _refuse_ole_container(path, "Word (.doc)")
    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError, PackageNotFoundError) as exc:
        raise IngestError(
            f"{path.name}: not a readable DOCX (damaged, or not a Word file). Open and save it again in Word."
        ) from exc
    lines = []
    for paragraph in document.paragraphs:
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        level = re.match(r"Heading (\d)", style)
        lines.append(f"{'#' * int(level.group(1))} {paragraph.text}" if level else paragraph.text)
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text for cell in row.cells))
    title = document.core_properties.title or ""
    return [Section("\n\n".join(lines))], {"title": title} if title else {}


def _rows_to_sections(header: list[str], rows: list[list[Any]], rows_per_section: int = 20) -> list[Section]:
    """A table becomes readable 'column: value' lines, chunked by rows with the header repeated."""
    sections = []
    for start in range(0, len(rows), rows_per_section):
        lines = [
            "; ".join(f"{h}: {v}" for h, v in zip(header, row, strict=False) if v not in (None, ""))
            for row in rows[start : start + rows_per_section]
        ]
        sections.append(Section("\n".join(line for line in lines if line)))
    return sections


def _read_csv(path: Path) -> tuple[list[Section], dict[str, Any]]:
    text = decode_text(path.read_bytes(), path.name)
    dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t") if text.strip() else csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        raise IngestError(f"{path.name}: the table is empty.")
    return _rows_to_sections(rows[0], rows[1:]), {}


def _read_xlsx(path: Path) -> tuple[list[Section], dict[str, Any]]:
    import zipfile

    from openpyxl import load_workbook

    _refuse_ole_container(path, "Excel (.xls)")
    try:
        workbook = load_workbook(str(path), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise IngestError(f"{path.name}: not a readable XLSX file ({exc}).") from exc
    sections: list[Section] = []
    for sheet in workbook.worksheets:
        rows = [list(row) for row in sheet.iter_rows(values_only=True)]
        if rows:
            header = [str(h) if h is not None else "" for h in rows[0]]
            for section in _rows_to_sections(header, rows[1:]):
                section.text = f"## {sheet.title}\n\n{section.text}"
                sections.append(section)
    workbook.close()
    return sections, {}


def _read_json(path: Path) -> tuple[list[Section], dict[str, Any]]:
    """FAQ exports: a list of {question, answer} objects (JSON array or JSON lines)."""
    text = decode_text(path.read_bytes(), path.name)
    try:
        if path.suffix == ".jsonl":
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
            items = data if isinstance(data, list) else data.get("items", [data])
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path.name}: invalid JSON ({exc.msg}, line {exc.lineno}).") from exc
    parts = []
    for item in items:
        if isinstance(item, dict):
            question = item.get("question") or item.get("q") or item.get("title") or ""
            answer = item.get("answer") or item.get("a") or item.get("text") or ""
            parts.append(f"## {question}\n\n{answer}" if question else str(answer))
    return [Section("\n\n".join(parts))], {}


READERS: dict[str, Callable[[Path], tuple[list[Section], dict[str, Any]]]] = {
    **{suffix: _read_text for suffix in TEXT_SUFFIXES},
    ".html": _read_html,
    ".htm": _read_html,
    ".pdf": _read_pdf,
    ".docx": _read_docx,
    ".csv": _read_csv,
    ".xlsx": _read_xlsx,
    ".json": _read_json,
    ".jsonl": _read_json,
}


def load_document(
    path: Path,
    *,
    root: Path,
    domain: str | None = None,
    audience: str | None = None,
    max_bytes: int = 50 * 1024 * 1024,
    max_unpacked: int = DEFAULT_MAX_UNPACKED,
) -> LoadedDocument:
    """Read one file with its metadata (front matter, `<file>.meta.yaml`, folder, CLI overrides).

    `max_bytes` caps the file on disk, `max_unpacked` what a compressed format (DOCX, XLSX, PDF) unpacks to.
    """
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise IngestError(f"{path.name}: unsupported format '{path.suffix}'.")
    size = path.stat().st_size
    if size == 0:
        raise IngestError(f"{path.name}: the file is empty.")
    if size > max_bytes:
        raise IngestError(
            f"{path.name}: {size / 2**20:.1f} MB is over the {max_bytes / 2**20:g} MB limit "
            "(RAG_BOT_INGEST_MAX_FILE_MB). Split it or raise the limit."
        )
    if path.suffix.lower() in (".docx", ".xlsx"):
        check_unpacked_zip(path, max_unpacked)
    sections, meta = _read_pdf(path, max_unpacked) if reader is _read_pdf else reader(path)
    sidecar = path.with_name(path.name + META_SUFFIX)
    if sidecar.exists():
        meta.update(yaml.safe_load(sidecar.read_text(encoding="utf-8")) or {})
    text = "\n".join(s.text for s in sections)
    if not text.strip():
        raise IngestError(f"{path.name}: no text found in the file.")
    resolved_domain = domain or meta.get("domain") or folder_domain(path, root) or "general"
    resolved_audience = audience or meta.get("audience") or "internal"
    if resolved_audience not in AUDIENCES:
        raise IngestError(f"{path.name}: audience must be 'public' or 'internal', not '{resolved_audience}'.")
    title = str(meta.get("title") or _first_heading(text) or path.stem.replace("_", " "))
    extra = {k: v for k, v in meta.items() if k not in {"title", "domain", "audience", "language"}}
    return LoadedDocument(
        source=str(path.resolve()),
        title=title,
        domain=str(resolved_domain),
        audience=str(resolved_audience),
        language=str(meta.get("language") or detect_language(text)),
        content_hash=source_hash(path, root=root, domain=domain, audience=audience),
        sections=sections,
        metadata={"format": path.suffix.lower().lstrip("."), **extra},
    )


def _first_heading(text: str) -> str | None:
    match = re.search(r"^#{1,3}\s+(.+)$", text, re.M)
    return match.group(1).strip() if match else None


def iter_files(root: Path) -> Iterator[Path | tuple[Path, str]]:
    """Supported files under root (or root itself); yields (path, reason) for those that can't be read.

    Symlink loops and unreadable folders are reported, not followed forever; a symlink whose target
    lies outside `root` is reported and skipped (it would be stored under a path no later run of this
    root recognises: re-read every time, never pruned, and out of the folder the operator reviewed).
    """
    if root.is_file():
        yield root
        return
    real_root = root.resolve()
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            stat = folder.stat()
            if (stat.st_dev, stat.st_ino) in seen:
                yield folder, "a symlink loop: this folder was already visited"
                continue
            seen.add((stat.st_dev, stat.st_ino))
            entries = sorted(folder.iterdir())
        except OSError as exc:
            yield folder, f"cannot be read ({exc.strerror})"
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name.endswith(META_SUFFIX):
                continue
            try:
                if entry.is_symlink() and not entry.resolve().is_relative_to(real_root):
                    if entry.is_dir() or entry.suffix.lower() in SUPPORTED_SUFFIXES:
                        yield entry, (f"a symlink to {entry.resolve()}, outside {real_root}: skipped. Copy the "
                                      "file in, or ingest its own folder.")
                    continue
                if entry.is_dir():
                    stack.append(entry)
                elif entry.suffix.lower() in SUPPORTED_SUFFIXES:
                    yield entry
            except OSError as exc:
                yield entry, f"cannot be read ({exc.strerror})"
