"""Documents (规程、讲义、标准) → ``Knowledge`` records, one per section or passage.

PDF, DOCX, Markdown, HTML and plain text are read into blocks (a heading, a paragraph or line, a table row, with the
page it is on), the blocks into sections under their heading path, and each section into passages of at most
``MAX_CHARS`` characters cut at sentence ends. A passage keeps its heading path and, for a PDF, the page where it
starts, so an answer can cite 《煤矿防治水细则》第12页 and every chunk carries "第四章 井下探放水 › 第三十九条".

Libraries, chosen by measurement (2026-11-30) on 煤矿防治水细则 (26,510 characters) printed to a 25-page PDF by
headless Chromium: pypdf 7.1.1, pdfplumber 0.11.10, PyMuPDF 2.0 and pypdfium2 all extracted every character and
488/488 lines verbatim (whitespace aside); pypdf 239 ms, pdfplumber 815 ms, PyMuPDF 40 ms, pypdfium2 55 ms.
pypdf is kept: the same fidelity, ~10 ms a page, pure Python with no dependencies (4 MB) and BSD-licensed, where
PyMuPDF is AGPL and 116 MB with its layout extras and pdfplumber adds pdfminer, pypdfium2 and Pillow for tables we
do not use yet. DOCX: python-docx (MIT; headings by style, tables in body order). Markdown and HTML need no library
(the standard html.parser; Markdown by its lines). markitdown and docling were not kept: markitdown reads PDFs
through pdfminer and loses page numbers; docling downloads layout models from a hub. Scanned pages (no text layer)
are not read: OCR is not done yet, and a PDF without text is refused saying so.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from indexer.errors import JiangxinError
from indexer.records import Knowledge

MAX_CHARS = 600
PATH_SEP = " › "
DOCUMENT_SUFFIXES = {".pdf": "pdf", ".docx": "docx", ".md": "markdown", ".markdown": "markdown",
                     ".html": "html", ".htm": "html", ".txt": "text"}
MAX_DOCX_UNPACKED = 200 * 1024 * 1024  # a DOCX whose parts unpack to more is refused (a zip bomb)

_NUM = r"[一二三四五六七八九十百千零〇两\d]+"
_CHAPTER = re.compile(rf"^(第{_NUM}[章编])\s*(.*)$")
_SECTION = re.compile(rf"^(第{_NUM}节)\s*(.*)$")
_ARTICLE = re.compile(rf"^(第{_NUM}条)(?:\s|(?=\S))")
_NUMBERED = re.compile(r"^(\d{1,2}(?:\.\d{1,2}){0,3})\s+(\D.{0,30})$")
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=\n)")
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")


class DocumentError(JiangxinError):
    """A document that cannot be read as knowledge: its type, a scan without text, a broken file."""


@dataclass(frozen=True)
class Block:
    """One piece of a document in reading order: a heading (``level`` 1–6) or body text (``level`` 0).

    ``glue`` joins body text to the body before it: a newline between paragraphs, nothing or a space between the
    visual lines of one PDF paragraph. ``label`` is a regulation article's own name (第三十九条) whose text is body."""

    text: str
    level: int = 0
    page: int | None = None
    glue: str = "\n"
    label: str = ""


@dataclass(frozen=True)
class Passage:
    """One future knowledge record: its heading path, start page and text."""

    heading_path: tuple[str, ...]
    page: int | None
    text: str


@dataclass(frozen=True)
class ParsedDocument:
    source: str
    format: str
    passages: list[Passage]


def detect_format(path: Path, head: bytes | None = None) -> str:
    """pdf, docx, html, markdown or text, from the content's first bytes where they say it, else the suffix."""
    if head is None:
        with open(path, "rb") as handle:
            head = handle.read(2048)
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                if "word/document.xml" in archive.namelist():
                    return "docx"
        except zipfile.BadZipFile:
            pass
        raise DocumentError(f"{path}: a zip archive that is not a Word .docx document (no word/document.xml)")
    sniff = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if sniff.startswith((b"<!doctype html", b"<html")) or re.search(rb"<(body|h[1-6]|p|table)[\s>]", sniff):
        return "html"
    suffix = DOCUMENT_SUFFIXES.get(path.suffix.lower())
    if suffix in ("pdf", "docx"):
        raise DocumentError(f"{path}: named {path.suffix} but its content is not a {suffix.upper()} file")
    return suffix if suffix in ("markdown", "html") else "text"


def is_document(path: Path) -> bool:
    """True when ``path`` should be imported as a document rather than a sheet (by content, then suffix)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    if head.startswith(b"%PDF-"):
        return True
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                return "word/document.xml" in archive.namelist()
        except zipfile.BadZipFile:
            return False
    return path.suffix.lower() in DOCUMENT_SUFFIXES and path.suffix.lower() != ".txt"


def parse_document(path: Path, source: str | None = None) -> ParsedDocument:
    """The passages of the document at ``path``; ``source`` (the document's name) defaults to the file name."""
    path = Path(path)
    source = (source or path.stem).strip()
    fmt = detect_format(path)
    if fmt == "pdf":
        blocks = _pdf_blocks(path)
    elif fmt == "docx":
        blocks = _docx_blocks(path)
    else:
        text = _decode(path)
        blocks = _html_blocks(text) if fmt == "html" else _markdown_blocks(text) if fmt == "markdown" else _text_blocks(text)
    blocks = [b for b in blocks if b.text != source]  # the document's own title line: the name says it already
    return ParsedDocument(source, fmt, passages(blocks))


def to_records(document: ParsedDocument, trade: str = "") -> list[Knowledge]:
    """One ``Knowledge`` record per passage, with ids stable across imports of the same document."""
    records: list[Knowledge] = []
    ordinals: dict[tuple[str, ...], int] = {}
    for passage in document.passages:
        ordinal = ordinals.get(passage.heading_path, 0)
        ordinals[passage.heading_path] = ordinal + 1
        key = "\n".join([document.source, PATH_SEP.join(passage.heading_path), str(ordinal)])
        records.append(Knowledge(
            id="kn-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12],
            title=PATH_SEP.join([document.source, *passage.heading_path]),
            body=passage.text, source=document.source, trade=trade,
            heading_path=list(passage.heading_path), page=passage.page))
    return records


def passages(blocks: list[Block], max_chars: int = MAX_CHARS) -> list[Passage]:
    """Sections under their heading path, each cut into passages of at most ``max_chars`` at sentence ends."""
    out: list[Passage] = []
    path: list[tuple[int, str]] = []
    body: list[tuple[str, int | None]] = []  # pieces of the current section's text with their page

    def flush() -> None:
        if body:
            heading = tuple(name for _, name in path)
            out.extend(Passage(heading, page, text) for page, text in _cut(body, max_chars))
            body.clear()

    for block in blocks:
        if block.level or block.label:
            flush()
            level = block.level or 7  # an article sits under every heading level
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, block.label or block.text))
            if not block.label:
                continue
        body.append(((block.glue if body else "") + block.text, block.page))
    flush()
    return out


def _cut(pieces: list[tuple[str, int | None]], max_chars: int) -> list[tuple[int | None, str]]:
    """The pieces' text in runs of ≤ ``max_chars`` cut after a sentence end, each with the page where it starts."""
    text = ""
    starts: list[tuple[int, int | None]] = []
    for piece, page in pieces:
        starts.append((len(text) + (len(piece) - len(piece.lstrip())), page))
        text += piece
    sentences = [s for s in _SENTENCE_END.split(text) if s]
    runs: list[tuple[int, str]] = []
    offset, run_start, run = 0, 0, ""
    for sentence in sentences:
        while len(sentence) > max_chars:  # a sentence longer than a passage is cut where it must be
            if run.strip():
                runs.append((run_start, run))
            runs.append((offset, sentence[:max_chars]))
            offset += max_chars
            sentence = sentence[max_chars:]
            run, run_start = "", offset
        if run and len(run) + len(sentence) > max_chars:
            runs.append((run_start, run))
            run, run_start = "", offset
        run += sentence
        offset += len(sentence)
    if run.strip():
        runs.append((run_start, run))
    out = []
    for start, chunk in runs:
        stripped = chunk.strip()
        if not stripped:
            continue
        start += len(chunk) - len(chunk.lstrip())
        page = None
        for piece_start, piece_page in starts:
            if piece_start <= start:
                page = piece_page
        out.append((page, stripped))
    return out


def _heading_of_line(line: str) -> Block | None:
    """A regulation heading (第一章 总则, 第一节 …, 3.2 探放水) as a heading block; an article (第三十九条…) as a
    labelled body block; None for body text."""
    short = len(line) <= 40 and not re.search(r"[。；，：,;:]", line)
    if short and (m := _CHAPTER.match(line)):
        return Block(" ".join(filter(None, m.groups())), level=1)
    if short and (m := _SECTION.match(line)):
        return Block(" ".join(filter(None, m.groups())), level=2)
    if short and (m := _NUMBERED.match(line)):
        return Block(f"{m.group(1)} {m.group(2).strip()}", level=3 + m.group(1).count("."))
    if m := _ARTICLE.match(line):
        return Block(line, label=m.group(1))
    return None


def _line_blocks(lines: list[str], page: int | None, joined_lines: bool) -> list[Block]:
    """Blocks of text lines; ``joined_lines`` when a line break inside a paragraph is only a visual wrap (PDF)."""
    out: list[Block] = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        found = _heading_of_line(line)
        if found is not None:
            out.append(Block(found.text, found.level, page, "\n", found.label))
            continue
        glue = "\n"
        if joined_lines:
            glue = "" if (out and _CJK.match(line[0])) or (out and _CJK.match(out[-1].text[-1])) else " "
        out.append(Block(line, 0, page, glue))
    return out


def _text_blocks(text: str) -> list[Block]:
    return _line_blocks(text.replace("\\n", "\n").splitlines(), None, joined_lines=False)


def _pdf_blocks(path: Path) -> list[Block]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError) as exc:
        raise DocumentError(f"{path}: not a readable PDF ({exc})") from None
    if pages and not any(p.strip() for p in pages):
        raise DocumentError(f"{path}: {len(pages)} page(s) without a text layer (a scan?); OCR is not supported yet")
    blocks: list[Block] = []
    for number, text in enumerate(pages, start=1):
        blocks.extend(_line_blocks(text.splitlines(), number, joined_lines=True))
    return blocks


def _docx_blocks(path: Path) -> list[Block]:
    import docx
    from docx.table import Table

    with zipfile.ZipFile(path) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > MAX_DOCX_UNPACKED:
        raise DocumentError(f"{path}: its parts unpack to {unpacked} bytes, more than {MAX_DOCX_UNPACKED}; refused")
    try:
        document = docx.Document(str(path))
    except Exception as exc:  # python-docx raises several kinds (KeyError, ValueError, lxml errors) for a broken file
        raise DocumentError(f"{path}: not a readable DOCX ({type(exc).__name__}: {exc})") from None
    blocks: list[Block] = []
    structured = False
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            blocks.extend(Block(row) for row in _rows([_distinct_cells(r.cells) for r in item.rows]))
            continue
        text = item.text.strip()
        if not text:
            continue
        style = (item.style.name if item.style is not None else "") or ""
        m = re.match(r"^(?:heading|标题)\s*(\d)$", style.strip(), re.IGNORECASE)
        if m:
            structured = True
            blocks.append(Block(text, level=min(int(m.group(1)), 6)))
        else:
            blocks.append(Block(text))
    return blocks if structured else _line_blocks([b.text for b in blocks], None, joined_lines=False)


def _distinct_cells(cells) -> list[str]:
    """A DOCX row's cell texts, a merged cell (which python-docx repeats) once."""
    seen: set[int] = set()
    out = []
    for cell in cells:
        if id(cell._tc) not in seen:
            seen.add(id(cell._tc))
            out.append(cell.text)
    return out


def _rows(rows: list[list[str]]) -> list[str]:
    """Table rows as text, cells joined by " | "; empty rows left out."""
    out = []
    for cells in rows:
        kept = [" ".join(cell.split()) for cell in cells]
        if any(kept):
            out.append(" | ".join(kept))
    return out


def _markdown_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    structured = False
    fence = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("```", "~~~")):
            fence = not fence
            continue
        if not line:
            continue
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*$", line)
        if m and not fence:
            structured = True
            blocks.append(Block(m.group(2), level=len(m.group(1))))
        elif line.startswith("|") and not fence:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells):
                blocks.extend(Block(row) for row in _rows([cells]))
        else:
            blocks.append(Block(re.sub(r"[*_`]{1,3}([^*_`]+)[*_`]{1,3}", r"\1", line)))
    return blocks if structured else _line_blocks([b.text for b in blocks], None, joined_lines=False)


class _HtmlReader(HTMLParser):
    """Headings h1–h6, paragraph-level text and table rows of an HTML page, in order (scripts and styles skipped)."""

    BREAKS = {"p", "div", "li", "br", "section", "article", "blockquote", "pre", "dd", "dt", "ul", "ol", "body"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.text: list[str] = []
        self.level = 0
        self.skip = 0
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in ("script", "style", "head", "template"):
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.level = int(tag[1])
        elif tag == "tr":
            self._flush()
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
        elif tag in self.BREAKS and self.cell is None:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "template"):
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
        elif tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row.append("".join(self.cell))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.blocks.extend(Block(row) for row in _rows([self.row]))
            self.row = None
        elif tag in self.BREAKS and self.cell is None:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        (self.cell if self.cell is not None else self.text).append(data)

    def _flush(self) -> None:
        text = " ".join("".join(self.text).split())
        if text:
            self.blocks.append(Block(text, level=self.level))
        self.text = []
        self.level = 0


def _html_blocks(text: str) -> list[Block]:
    reader = _HtmlReader()
    reader.feed(text)
    reader.close()
    reader._flush()
    if any(b.level for b in reader.blocks):
        return reader.blocks
    return _line_blocks([b.text for b in reader.blocks], None, joined_lines=False)


def _decode(path: Path) -> str:
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise DocumentError(f"{path}: text in neither UTF-8 nor GBK")
