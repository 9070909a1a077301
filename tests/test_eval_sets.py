"""Validate the demo knowledge base (documents + metadata) and its eval sets.

* every document in knowledge_base/docs has valid metadata (front matter or a ``.meta.yaml`` sidecar);
* knowledge_base/eval/docs_qa.jsonl: fields, labels, sizes, balance, gold docs exist, gold passages are
  verbatim substrings of the gold document's text (source text for generated binary formats);
* knowledge_base/eval/router.jsonl: fields, labels, sizes, balance;
* knowledge_base/build_docs.py is reproducible and its output contains the source's text.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KB = ROOT / "knowledge_base"
DOCS = KB / "docs"
SRC = KB / "docs_src"
EVAL = KB / "eval"
BUILD = KB / "build_docs.py"

DOMAINS = {"hr", "sales", "support", "finance", "it"}
AUDIENCES = {"public", "internal"}
LANGUAGES = {"ru", "en"}
META_KEYS = ("title", "domain", "audience", "language")
TEXT_FORMATS = {".md", ".txt", ".html"}  # YAML front matter inside the file
SIDECAR_FORMATS = {".csv"}  # text, metadata in <name>.csv.meta.yaml
GENERATED_FORMATS = {".pdf", ".docx", ".xlsx"}  # built from docs_src/<rel>.md, sidecar metadata
ALL_FORMATS = TEXT_FORMATS | SIDECAR_FORMATS | GENERATED_FORMATS
INTENTS = {"docs", "sql", "chart", "smalltalk", "out_of_scope"}
ROUTER_LANGUAGES = {"ru", "en", "mixed"}
MAX_BINARY_BYTES = 1_000_000

_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)


# ------------------------------------------------------------------------------------------ helpers


def documents() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*") if p.is_file() and not p.name.endswith(".meta.yaml"))


def rel(path: Path) -> str:
    return path.relative_to(DOCS).as_posix()


def metadata(path: Path) -> dict:
    if path.suffix in TEXT_FORMATS:
        m = _FRONT_MATTER.match(path.read_text(encoding="utf-8"))
        assert m, f"{rel(path)}: no YAML front matter"
        return yaml.safe_load(m.group(1))
    sidecar = Path(f"{path}.meta.yaml")
    assert sidecar.is_file(), f"{rel(path)}: missing sidecar {sidecar.name}"
    return yaml.safe_load(sidecar.read_text(encoding="utf-8"))


def source_of(path: Path) -> Path:
    """The text a gold passage is checked against: the file itself or its docs_src source."""
    if path.suffix in GENERATED_FORMATS:
        return SRC / f"{rel(path)}.md"
    return path


def source_text(path: Path) -> str:
    return source_of(path).read_text(encoding="utf-8")


def squash(text: str) -> str:
    """Whitespace-free form for comparing extracted text with source text."""
    return "".join(text.split())


def load_jsonl(name: str) -> list[dict]:
    rows = []
    for n, line in enumerate((EVAL / name).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:  # pragma: no cover - reported as failure
                pytest.fail(f"{name}:{n}: invalid JSON: {exc}")
    return rows


DOC_LIST = documents()
META = {rel(p): metadata(p) for p in DOC_LIST}


# ------------------------------------------------------------------------------------------ documents


def test_document_formats_and_layout():
    assert DOC_LIST, "no documents"
    for path in DOC_LIST:
        assert path.suffix in ALL_FORMATS, f"{rel(path)}: unexpected format"
        parts = path.relative_to(DOCS).parts
        assert len(parts) == 2 and parts[0] in DOMAINS, f"{rel(path)}: expected docs/<domain>/<file>"


@pytest.mark.parametrize("name", sorted(META))
def test_document_metadata(name):
    meta = META[name]
    for key in META_KEYS:
        assert key in meta and meta[key], f"{name}: metadata lacks {key}"
    assert isinstance(meta["title"], str) and len(meta["title"]) >= 5
    assert meta["domain"] in DOMAINS
    assert meta["domain"] == name.split("/")[0], f"{name}: domain does not match its folder"
    assert meta["audience"] in AUDIENCES
    assert meta["language"] in LANGUAGES


def test_document_counts_and_balance():
    assert len(META) >= 50
    by_domain = collections.Counter(m["domain"] for m in META.values())
    assert set(by_domain) == DOMAINS
    assert min(by_domain.values()) >= 8, by_domain
    by_lang = collections.Counter(m["language"] for m in META.values())
    for lang in LANGUAGES:
        assert by_lang[lang] * 3 >= len(META), by_lang
    by_aud = collections.Counter(m["audience"] for m in META.values())
    assert by_aud["public"] >= 10 and by_aud["internal"] >= 10, by_aud


def test_format_mix():
    by_format = collections.Counter(p.suffix for p in DOC_LIST)
    for fmt in (".md", ".txt", ".html", ".pdf", ".docx"):
        assert by_format[fmt] >= 1, f"no {fmt} document"
    assert by_format[".csv"] + by_format[".xlsx"] >= 1
    assert by_format[".md"] * 2 >= len(DOC_LIST), "Markdown should be the majority"


def test_html_documents_have_title_and_headings():
    from bs4 import BeautifulSoup

    for path in DOC_LIST:
        if path.suffix == ".html":
            body = _FRONT_MATTER.sub("", path.read_text(encoding="utf-8"), count=1)
            soup = BeautifulSoup(body, "html.parser")
            assert soup.title and soup.title.get_text(strip=True), rel(path)
            assert soup.find("h1") is not None, rel(path)


def test_generated_documents_have_sources_and_stay_small():
    generated = [p for p in DOC_LIST if p.suffix in GENERATED_FORMATS]
    assert generated
    for path in generated:
        assert source_of(path).is_file(), f"{rel(path)}: no source in docs_src"
        src_meta = yaml.safe_load(_FRONT_MATTER.match(source_text(path)).group(1))
        assert {k: src_meta[k] for k in META_KEYS} == {k: META[rel(path)][k] for k in META_KEYS}
    for src in SRC.rglob("*.md"):
        target = DOCS / src.relative_to(SRC).with_suffix("")
        assert target.is_file(), f"{src.relative_to(KB)} was not built; run build_docs.py"
    assert sum(p.stat().st_size for p in generated) < MAX_BINARY_BYTES


def test_long_documents_exist():
    """At least three long documents (~10 pages, about 4,000 words)."""
    long_docs = [rel(p) for p in DOC_LIST if len(re.findall(r"\w+", source_text(p))) >= 3800]
    assert len(long_docs) >= 3, long_docs


# ------------------------------------------------------------------------------------------ docs QA

QA = load_jsonl("docs_qa.jsonl")
QA_FIELDS = (
    "id",
    "question",
    "language",
    "domain",
    "gold_docs",
    "gold_passage",
    "audience_of_asker",
    "expected",
)


def test_docs_qa_size_and_balance():
    assert len(QA) >= 120
    ids = [q["id"] for q in QA]
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert len({q["question"] for q in QA}) == len(QA), "duplicate questions"
    by_lang = collections.Counter(q["language"] for q in QA)
    for lang in LANGUAGES:
        assert by_lang[lang] >= 0.4 * len(QA), by_lang
    assert collections.Counter(q["domain"] for q in QA).keys() == DOMAINS
    refusals = [q for q in QA if q["expected"] == "refuse"]
    assert len(refusals) >= 10
    assert sum(len(q["gold_docs"]) >= 2 for q in QA) >= 5, "need questions spanning two documents"
    cross = [q for q in QA if any(META[d]["language"] != q["language"] for d in q["gold_docs"])]
    assert len(cross) >= 10, "need cross-lingual questions"


@pytest.mark.parametrize("item", QA, ids=[q.get("id", "?") for q in QA])
def test_docs_qa_item(item):
    for field in QA_FIELDS:
        assert field in item, f"missing {field}"
    assert re.fullmatch(r"qa-\d{3}", item["id"])
    assert item["language"] in LANGUAGES
    assert item["domain"] in DOMAINS
    assert item["audience_of_asker"] in AUDIENCES
    assert item["expected"] in {"answer", "refuse"}
    assert isinstance(item["question"], str) and len(item["question"]) >= 8
    if item["language"] == "ru":
        assert re.search(r"[а-яё]", item["question"], re.I), "ru question without Cyrillic"
    else:
        assert not re.search(r"[а-яё]", item["question"], re.I), "en question with Cyrillic"

    gold = item["gold_docs"]
    assert isinstance(gold, list) and 1 <= len(gold) <= 3
    for doc in gold:
        assert doc in META, f"gold doc {doc} does not exist"
    assert item["domain"] in {META[d]["domain"] for d in gold}

    passage = item["gold_passage"]
    assert isinstance(passage, str) and 8 <= len(passage) <= 300
    assert any(passage in source_text(DOCS / d) for d in gold), "gold_passage not found verbatim"

    audiences = {META[d]["audience"] for d in gold}
    if item["expected"] == "refuse":
        assert item["audience_of_asker"] == "public"
        assert "internal" in audiences, "a refusal must be about an internal document"
    elif item["audience_of_asker"] == "public":
        assert audiences == {"public"}, "a public asker may only be answered from public documents"


# ------------------------------------------------------------------------------------------ router

ROUTER = load_jsonl("router.jsonl")
ROUTER_FIELDS = ("id", "message", "intent", "domain", "language")


def test_router_size_and_balance():
    assert len(ROUTER) >= 200
    assert len({r["id"] for r in ROUTER}) == len(ROUTER)
    assert len({r["message"].strip().lower() for r in ROUTER}) == len(ROUTER), "duplicate messages"
    by_intent = collections.Counter(r["intent"] for r in ROUTER)
    assert set(by_intent) == INTENTS
    assert min(by_intent.values()) >= 15, by_intent
    by_lang = collections.Counter(r["language"] for r in ROUTER)
    assert by_lang["ru"] >= 0.3 * len(ROUTER) and by_lang["en"] >= 0.3 * len(ROUTER), by_lang
    assert by_lang["mixed"] >= 10, by_lang
    docs_domains = {r["domain"] for r in ROUTER if r["intent"] == "docs"}
    assert docs_domains == DOMAINS
    assert sum(bool(r.get("misspelled")) for r in ROUTER) >= 10


@pytest.mark.parametrize("item", ROUTER, ids=[r.get("id", "?") for r in ROUTER])
def test_router_item(item):
    for field in ROUTER_FIELDS:
        assert field in item, f"missing {field}"
    assert re.fullmatch(r"rt-\d{3}", item["id"])
    assert isinstance(item["message"], str) and item["message"].strip()
    assert item["intent"] in INTENTS
    assert item["language"] in ROUTER_LANGUAGES
    if item["intent"] in {"smalltalk", "out_of_scope"}:
        assert item["domain"] is None
    else:
        assert item["domain"] in DOMAINS
    has_cyr = bool(re.search(r"[а-яё]", item["message"], re.I))
    has_lat = bool(re.search(r"[a-z]{2,}", item["message"], re.I))
    if item["language"] == "ru":
        assert has_cyr
    elif item["language"] == "en":
        assert not has_cyr
    else:
        assert has_cyr and has_lat


# ------------------------------------------------------------------------------------------ build


def _build(out: Path) -> None:
    subprocess.run([sys.executable, str(BUILD), "--out", str(out)], check=True, cwd=ROOT, capture_output=True)


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def extract_text(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".pdf":
        from pypdf import PdfReader

        pages = []
        for page in PdfReader(io.BytesIO(data)).pages:
            lines = (page.extract_text() or "").splitlines()
            # drop the running header ("TechnoSnab LLC — <title>") and the footer ("<n> / <total>")
            if lines and lines[0].startswith("TechnoSnab LLC — "):
                lines = lines[1:]
            if lines:
                lines[-1] = re.sub(r"\d+ / \d+$", "", lines[-1])
            pages.append("\n".join(lines))
        return "\n".join(pages)
    if path.suffix == ".docx":
        import docx

        document = docx.Document(io.BytesIO(data))
        parts = [p.text for p in document.paragraphs]
        for table in document.tables:
            parts += [" | ".join(c.text for c in row.cells) for row in table.rows]
        return "\n".join(parts)
    if path.suffix == ".xlsx":
        from openpyxl import load_workbook

        wb = load_workbook(io.BytesIO(data), read_only=True)
        return "\n".join(
            " | ".join("" if v is None else str(v) for v in row)
            for ws in wb
            for row in ws.iter_rows(values_only=True)
        )
    raise ValueError(path)


def _key_sentences(source: str) -> list[str]:
    body = _FRONT_MATTER.sub("", source, count=1)
    paragraphs = [p.strip() for p in body.split("\n\n")]
    plain = [
        p for p in paragraphs if p and not p.startswith(("#", "|", "-", "*")) and not re.match(r"\d+\.", p)
    ]
    sentences = [s for p in plain for s in re.split(r"(?<=[.!?])\s+", p.replace("\n", " ")) if len(s) > 30]
    return sentences[:: max(1, len(sentences) // 8)]


@pytest.fixture(scope="module")
def built_twice(tmp_path_factory):
    first, second = tmp_path_factory.mktemp("build1"), tmp_path_factory.mktemp("build2")
    _build(first)
    _build(second)
    return first, second


def test_build_is_reproducible(built_twice):
    first, second = built_twice
    assert _digest(first), "build produced nothing"
    assert _digest(first) == _digest(second), "two builds differ"


def test_committed_binaries_match_build(built_twice):
    first, _ = built_twice
    for name, digest in _digest(first).items():
        committed = DOCS / name
        assert committed.is_file(), f"{name} not in knowledge_base/docs; run build_docs.py"
        assert hashlib.sha256(committed.read_bytes()).hexdigest() == digest, f"{name} is stale; rebuild"


def test_built_text_contains_source_sentences(built_twice):
    first, _ = built_twice
    generated = [p for p in first.rglob("*") if p.suffix in GENERATED_FORMATS]
    assert generated
    for path in generated:
        text = squash(extract_text(path))
        source = (SRC / f"{path.relative_to(first).as_posix()}.md").read_text(encoding="utf-8")
        title = yaml.safe_load(_FRONT_MATTER.match(source).group(1))["title"]
        sentences = _key_sentences(source) + [title]
        missing = [s for s in sentences if squash(s.replace("**", "")) not in text]
        assert not missing, f"{path.name}: text missing from the built file: {missing[:3]}"


def test_gold_passages_of_binary_docs_survive_the_build(built_twice):
    first, _ = built_twice
    texts: dict[str, str] = {}
    for item in QA:
        for doc in item["gold_docs"]:
            if Path(doc).suffix in GENERATED_FORMATS and item["gold_passage"] in source_text(DOCS / doc):
                if doc not in texts:
                    texts[doc] = squash(extract_text(first / doc))
                passage = re.sub(r"\s*\|\s*", "|", item["gold_passage"])
                if "|" in passage:  # a table row: compare cell by cell
                    assert all(squash(c) in texts[doc] for c in passage.split("|") if c), item["id"]
                else:
                    assert squash(passage) in texts[doc], item["id"]
