"""Build the binary documents of the demo knowledge base from their text sources.

Sources live in ``knowledge_base/docs_src/<domain>/<name>.<fmt>.md`` where ``<fmt>`` is ``pdf``,
``docx`` or ``xlsx``. Each source is a small Markdown file with YAML front matter (title, domain,
audience, language). The build writes ``<out>/<domain>/<name>.<fmt>`` and a metadata sidecar
``<out>/<domain>/<name>.<fmt>.meta.yaml`` with the same keys.

The output is byte-for-byte reproducible: fixed creation dates, fixed ZIP timestamps, no random ids.

Supported Markdown subset: ``#``/``##``/``###`` headings, paragraphs (consecutive lines), ``- `` bullet
items, ``1. `` numbered items, pipe tables (``| a | b |`` with a ``|---|`` separator row) and ``**bold**``
(rendered as plain text). For XLSX every ``##`` heading followed by a table becomes a worksheet;
paragraphs and bullets go to a final "Notes" sheet.

Usage::

    uv run python knowledge_base/build_docs.py [--src DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

KB_DIR = Path(__file__).resolve().parent
DEFAULT_SRC = KB_DIR / "docs_src"
DEFAULT_OUT = KB_DIR / "docs"
FORMATS = ("pdf", "docx", "xlsx")
META_KEYS = ("title", "domain", "audience", "language")
FIXED_DATE = dt.datetime(2025, 1, 15, 9, 0, 0, tzinfo=dt.UTC)
ZIP_DATE = (2025, 1, 15, 9, 0, 0)
COMPANY = "TechnoSnab LLC"

_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)


# --------------------------------------------------------------------------------------------- parsing


@dataclass
class Block:
    kind: str  # h1 h2 h3 p bullet number table
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)


def split_front_matter(text: str) -> tuple[dict, str]:
    """Return (metadata, body) of a document that starts with YAML front matter."""
    m = _FRONT_MATTER.match(text)
    if not m:
        raise ValueError("document does not start with YAML front matter")
    meta = yaml.safe_load(m.group(1)) or {}
    return meta, text[m.end() :]


def _inline(text: str) -> str:
    return text.replace("**", "").replace("`", "")


def parse_markdown(body: str) -> list[Block]:
    blocks: list[Block] = []
    para: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if para:
            blocks.append(Block("p", _inline(" ".join(para))))
            para.clear()
        if table:
            blocks.append(Block("table", rows=[r[:] for r in table]))
            table.clear()

    for raw in body.splitlines():
        line = raw.strip()
        if not line:
            flush()
            continue
        if line.startswith("|"):
            if para:
                blocks.append(Block("p", _inline(" ".join(para))))
                para.clear()
            cells = [_inline(c.strip()) for c in line.strip("|").split("|")]
            if all(re.fullmatch(r":?-{2,}:?", c) for c in cells):
                continue
            table.append(cells)
            continue
        if table:
            flush()
        heading = re.match(r"(#{1,3})\s+(.*)", line)
        if heading:
            flush()
            blocks.append(Block(f"h{len(heading.group(1))}", _inline(heading.group(2))))
        elif line.startswith(("- ", "* ")):
            flush()
            blocks.append(Block("bullet", _inline(line[2:])))
        elif re.match(r"\d+\.\s", line):
            flush()
            blocks.append(Block("number", _inline(line)))
        else:
            para.append(line)
    flush()
    return blocks


# --------------------------------------------------------------------------------------------- PDF


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def render_pdf(meta: dict, blocks: list[Block]) -> bytes:
    from fpdf import FPDF

    title = str(meta["title"])

    class Doc(FPDF):
        def header(self) -> None:  # noqa: D102
            if self.page_no() == 1:
                return
            self.set_font("DejaVu", size=8)
            self.set_text_color(110, 110, 110)
            self.cell(0, 6, f"{COMPANY} — {title}", align="L")
            self.ln(8)
            self.set_text_color(0, 0, 0)

        def footer(self) -> None:  # noqa: D102
            self.set_y(-12)
            self.set_font("DejaVu", size=8)
            self.set_text_color(110, 110, 110)
            self.cell(0, 6, f"{self.page_no()} / {{nb}}", align="C")
            self.set_text_color(0, 0, 0)

    pdf = Doc(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(title)
    pdf.set_author(COMPANY)
    pdf.set_creator("knowledge_base/build_docs.py")
    pdf.set_lang("ru" if meta.get("language") == "ru" else "en")
    fonts = _font_dir()
    pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.set_margins(18, 16, 18)
    pdf.add_page()
    width = pdf.epw

    sizes = {"h1": 17, "h2": 13.5, "h3": 11.5}
    for block in blocks:
        if block.kind in sizes:
            pdf.ln(3 if block.kind != "h1" else 0)
            pdf.set_font("DejaVu", "B", sizes[block.kind])
            pdf.multi_cell(width, sizes[block.kind] * 0.5, block.text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.5)
        elif block.kind == "p":
            pdf.set_font("DejaVu", "", 10.5)
            pdf.multi_cell(width, 5.6, block.text, align="L", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2.2)
        elif block.kind in ("bullet", "number"):
            pdf.set_font("DejaVu", "", 10.5)
            marker = "•" if block.kind == "bullet" else ""
            pdf.set_x(pdf.l_margin + 4)
            text = f"{marker} {block.text}" if marker else block.text
            pdf.multi_cell(width - 4, 5.6, text, align="L", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(0.8)
        elif block.kind == "table":
            pdf.set_font("DejaVu", "", 9)
            pdf.ln(1)
            with pdf.table(
                first_row_as_headings=True,
                headings_style=_pdf_heading_style(),
                line_height=4.8,
                padding=1.2,
            ) as table:
                for row in block.rows:
                    cells = table.row()
                    for cell in row:
                        cells.cell(cell)
            pdf.ln(3)
    return bytes(pdf.output())


def _pdf_heading_style():
    from fpdf.fonts import FontFace

    return FontFace(emphasis="BOLD", fill_color=(225, 232, 240))


# --------------------------------------------------------------------------------------------- DOCX


def render_docx(meta: dict, blocks: list[Block]) -> bytes:
    import docx
    from docx.shared import Pt

    document = docx.Document()
    props = document.core_properties
    props.title = str(meta["title"])
    props.author = COMPANY
    props.last_modified_by = COMPANY
    props.language = str(meta.get("language", ""))
    props.created = FIXED_DATE.replace(tzinfo=None)
    props.modified = FIXED_DATE.replace(tzinfo=None)
    props.revision = 1
    style = document.styles["Normal"]
    style.font.name = "Calibri"
    style.font.size = Pt(11)

    levels = {"h1": 0, "h2": 1, "h3": 2}
    for block in blocks:
        if block.kind in levels:
            document.add_heading(block.text, level=levels[block.kind])
        elif block.kind == "p":
            document.add_paragraph(block.text)
        elif block.kind == "bullet":
            document.add_paragraph(block.text, style="List Bullet")
        elif block.kind == "number":
            document.add_paragraph(block.text)
        elif block.kind == "table":
            ncols = max(len(r) for r in block.rows)
            table = document.add_table(rows=0, cols=ncols)
            table.style = "Table Grid"
            for i, row in enumerate(block.rows):
                cells = table.add_row().cells
                for j, value in enumerate(row):
                    cells[j].text = value
                    if i == 0:
                        for run in cells[j].paragraphs[0].runs:
                            run.bold = True
    buf = io.BytesIO()
    document.save(buf)
    return normalize_zip(buf.getvalue())


# --------------------------------------------------------------------------------------------- XLSX


def _number(value: str):
    """Convert '12 345,50' / '12345.5' / '49 990' to a number; leave other text as is."""
    compact = value.replace("\u00a0", "").replace(" ", "")
    if re.fullmatch(r"-?\d+", compact):
        return int(compact)
    if re.fullmatch(r"-?\d+[.,]\d+", compact):
        return float(compact.replace(",", "."))
    return value


def render_xlsx(meta: dict, blocks: list[Block]) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font, PatternFill

    wb = Workbook()
    wb.remove(wb.active)
    wb.properties.title = str(meta["title"])
    wb.properties.creator = COMPANY
    wb.properties.lastModifiedBy = COMPANY
    wb.properties.created = FIXED_DATE.replace(tzinfo=None)
    wb.properties.modified = FIXED_DATE.replace(tzinfo=None)

    notes: list[str] = []
    sheet_name = "Sheet"
    bold = Font(bold=True)
    fill = PatternFill("solid", fgColor="DCE6F0")
    for block in blocks:
        if block.kind in ("h1",):
            notes.append(block.text)
        elif block.kind in ("h2", "h3"):
            sheet_name = block.text[:31]
        elif block.kind == "table":
            ws = wb.create_sheet(sheet_name)
            for i, row in enumerate(block.rows):
                ws.append(row if i == 0 else [_number(v) for v in row])
            for cell in ws[1]:
                cell.font = bold
                cell.fill = fill
            for col in ws.columns:
                longest = max(len(str(c.value)) for c in col if c.value is not None)
                ws.column_dimensions[col[0].column_letter].width = min(60, max(10, longest + 2))
            ws.freeze_panes = "A2"
        else:
            notes.append(block.text)
    if notes:
        ws = wb.create_sheet("Notes" if meta.get("language") != "ru" else "Примечания")
        for line in notes:
            ws.append([line])
        ws.column_dimensions["A"].width = 120
    buf = io.BytesIO()
    wb.save(buf)
    return normalize_zip(buf.getvalue())


# --------------------------------------------------------------------------------------------- common

_CORE_DATES = re.compile(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:(?:created|modified)>)")


def normalize_zip(data: bytes) -> bytes:
    """Rewrite an OOXML zip with fixed timestamps (entries and core properties) for reproducibility."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            payload = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                payload = _CORE_DATES.sub(rb"\g<1>2025-01-15T09:00:00Z\g<2>", payload)
            entry = zipfile.ZipInfo(info.filename, date_time=ZIP_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, payload)
    return out.getvalue()


RENDERERS = {"pdf": render_pdf, "docx": render_docx, "xlsx": render_xlsx}


def source_files(src: Path = DEFAULT_SRC) -> list[Path]:
    """All buildable sources, sorted: ``<domain>/<name>.<fmt>.md``."""
    return sorted(p for p in src.rglob("*.md") if p.suffixes[-2:-1] and p.suffixes[-2][1:] in FORMATS)


def target_for(source: Path, src: Path = DEFAULT_SRC, out: Path = DEFAULT_OUT) -> Path:
    """Path of the generated document for a source (drops the trailing ``.md``)."""
    return out / source.relative_to(src).with_suffix("")


def build_one(source: Path, src: Path, out: Path) -> Path:
    meta, body = split_front_matter(source.read_text(encoding="utf-8"))
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{source}: front matter lacks {missing}")
    fmt = source.suffixes[-2][1:]
    target = target_for(source, src, out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(RENDERERS[fmt](meta, parse_markdown(body)))
    sidecar = {k: meta[k] for k in META_KEYS}
    sidecar["source"] = source.relative_to(src.parent).as_posix()
    Path(f"{target}.meta.yaml").write_text(
        yaml.safe_dump(sidecar, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    return target


def build(src: Path = DEFAULT_SRC, out: Path = DEFAULT_OUT) -> list[Path]:
    """Build every source into ``out``; return the generated document paths."""
    return [build_one(s, src, out) for s in source_files(src)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="sources folder (docs_src)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (docs)")
    args = parser.parse_args(argv)
    built = build(args.src.resolve(), args.out.resolve())
    total = sum(p.stat().st_size for p in built)
    sys.stdout.write(f"built {len(built)} documents, {total / 1024:.0f} KiB\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
