"""Spreadsheets in and out (表格导入导出): rows of an XLSX or CSV file become records of one kind, and back.

``parse_sheet`` reads a file, maps its headers to the kind's fields (common Chinese headers, the field names
themselves, ``--map`` overrides) and validates every row, collecting each bad one as ``file:row:column: reason``.
``import_rows`` writes the good records through the corpus's one writer in one atomic replace — all rows or
none, unless invalid rows may be skipped. Ids come from an id column, else from a hash of the fields that say
which record a row is (a standard question's question, an achievement's title and unit…), so importing the same
sheet twice changes nothing. ``export_sheet`` writes a kind back to XLSX with the default headers.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import secrets
import typing
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from indexer.corpus_store import BatchOutcome, CorpusStore
from indexer.errors import CorpusInvalid, JiangxinError
from indexer.records import FILE_OF_KIND, KINDS, Record, load_corpus, record_to_json
from indexer.store import fsync_dir

log = logging.getLogger(__name__)

ID_FIELD = "id"
EXTRA_FIELD = "extra"
ID_HEADERS = ("编号", "ID", "记录编号")
EXTRA_HEADERS = ("附加信息",)
LIST_JOINER = "；"
# A list cell is split on the strong separators when it has one; else lists of short terms (keywords, names)
# are split on 、 and commas too. Free-text lists (aliases, chapters) never are: real items hold 、 and ，
# ("截齿老是掉、齿座也打坏了"), so splitting there would change them.
STRONG_SEPARATORS = r"[；;|｜\n]"
WEAK_SEPARATORS = r"[、,，]"
TERM_LISTS = {"keywords", "authors", "honours", "trades", "skills"}
PREVIEW_ROWS = 5
_UNREADABLE = object()  # a cell whose problem is already reported

# Per kind: public field name (the JSONL name) → headers that mean it; the first is the one ``export_sheet`` writes.
HEADERS: dict[str, dict[str, tuple[str, ...]]] = {
    "standard_question": {
        "question": ("问题", "标准问题", "问题描述", "提问"),
        "answer": ("答案", "标准答案", "回答", "解答"),
        "aliases": ("相似问法", "相似问题", "别名", "同义问法"),
        "trade": ("工种", "专业", "行业"),
        "keywords": ("关键词", "关键字"),
    },
    "achievement": {
        "title": ("成果名称", "名称", "项目名称", "成果"),
        "summary": ("成果简介", "简介", "摘要", "概述"),
        "problem": ("存在问题", "问题", "问题描述", "难题"),
        "solution": ("解决方法", "方法", "解决方案", "技术方案", "创新做法"),
        "benefits": ("应用效果", "效果", "成效", "效益"),
        "trade": ("工种", "专业", "行业"),
        "keywords": ("关键词", "关键字"),
        "authors": ("完成人", "作者", "成果完成人", "主要完成人"),
        "unit": ("完成单位", "单位", "所在单位"),
        "year": ("年份", "年度", "完成年份"),
    },
    "course": {
        "title": ("课程名称", "名称", "课程"),
        "description": ("课程简介", "简介", "描述", "课程描述"),
        "chapters": ("章节", "目录", "课程章节"),
        "trade": ("工种", "专业", "行业"),
        "level": ("等级", "级别", "技能等级"),
        "duration": ("学时", "时长", "课时"),
    },
    "craftsman": {
        "name": ("姓名", "名字"),
        "honours": ("荣誉", "荣誉称号", "称号"),
        "trades": ("工种", "专业", "行业"),
        "skills": ("擅长技能", "技能", "专长", "擅长"),
        "region": ("地区", "所在地区", "地域"),
        "bio": ("个人简介", "简介", "介绍"),
    },
    "passage": {
        "title": ("标题", "名称"),
        "text": ("正文", "内容", "文本"),
        "trade": ("工种", "专业", "行业"),
    },
}
# The fields that say which record a row is, when the sheet has no id column; editing the other fields of
# such a row then updates its record instead of adding a second one.
IDENTITY: dict[str, tuple[str, ...]] = {
    "standard_question": ("question",),
    "achievement": ("title", "unit"),
    "course": ("title",),
    "craftsman": ("name", "region"),
    "passage": ("title", "text"),
}
ID_PREFIX = {"standard_question": "sq", "achievement": "ach", "course": "course", "craftsman": "cm", "passage": "psg"}


class SheetError(JiangxinError):
    """A spreadsheet that cannot be imported as a whole (unreadable, no header, a required column missing…)."""


@dataclass(frozen=True)
class RowProblem:
    """One bad cell or row: the spreadsheet's row number (the header is row 1 or later) and the column's header."""

    file: str
    row: int
    column: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}:{self.column}: {self.reason}"


class SheetInvalid(JiangxinError):
    """Some rows are bad and skipping them was not allowed; nothing was written."""

    def __init__(self, problems: list[RowProblem]) -> None:
        self.problems = problems
        lines = "\n".join(str(p) for p in problems[:200])
        more = f"\n… and {len(problems) - 200} more" if len(problems) > 200 else ""
        super().__init__(f"{len(problems)} bad row(s); nothing was imported (fix them, or pass --skip-invalid to "
                         f"import the other rows):\n{lines}{more}")


@dataclass(frozen=True)
class Table:
    """A sheet's cells: its header row and the rows below it, each with its row number in the spreadsheet."""

    file: str
    source: str  # what was read: "sheet 'Sheet1'" or "CSV, UTF-8 with BOM, ',' separated"
    header_row: int
    headers: list[str]
    rows: list[tuple[int, list[Any]]]


@dataclass(frozen=True)
class ColumnMap:
    """Which column feeds which field; ``ignored`` are the headers no field takes."""

    fields: dict[int, str]  # column index → public field name
    headers: list[str]
    ignored: list[str]

    def header_of(self, field_name: str) -> str:
        for index, name in self.fields.items():
            if name == field_name:
                return self.headers[index]
        return field_name


@dataclass
class ParsedSheet:
    """A sheet read and validated: its good records by row, every bad row, and a preview of the mapped cells."""

    kind: str
    table: Table
    columns: ColumnMap
    records: list[tuple[int, Record]] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    preview: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    generated_ids: bool = False


@dataclass(frozen=True)
class ImportReport:
    """What an import did (or, dry, would do): ids added, updated, unchanged, and the rows skipped."""

    outcome: BatchOutcome
    skipped: list[RowProblem]
    written: bool


def read_table(path: Path) -> Table:
    """The first worksheet of an XLSX file, or a CSV file in UTF-8 (with or without BOM) or GB18030/GBK."""
    path = Path(path)
    if not path.is_file():
        raise SheetError(f"{path}: no such file")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic.startswith(b"PK"):
        return _read_xlsx(path)
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        raise SheetError(f"{path}: not an XLSX file (it is not a zip archive); save it as .xlsx or .csv")
    if magic.startswith(b"\xd0\xcf\x11\xe0"):
        raise SheetError(f"{path}: an old Excel .xls file; save it as .xlsx or .csv")
    return _read_csv(path)


def _read_xlsx(path: Path) -> Table:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, KeyError, OSError, ValueError) as exc:
        raise SheetError(f"{path}: cannot be read as XLSX ({exc})") from None
    try:
        sheet = book.worksheets[0]
        rows = [(number, list(values)) for number, values in enumerate(sheet.iter_rows(values_only=True), start=1)]
        source = f"sheet {sheet.title!r}" + (f" (the first of {len(book.worksheets)})" if len(book.worksheets) > 1 else "")
    finally:
        book.close()
    return _table(path, source, rows)


def _read_csv(path: Path) -> Table:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        text, encoding = data[3:].decode("utf-8", errors="strict"), "UTF-8 with BOM"
    else:
        try:
            text, encoding = data.decode("utf-8"), "UTF-8"
        except UnicodeDecodeError:
            try:
                text, encoding = data.decode("gb18030"), "GB18030 (GBK)"
            except UnicodeDecodeError as exc:
                raise SheetError(f"{path}: neither UTF-8 nor GB18030/GBK text (byte {exc.start}); "
                                 "save it as CSV UTF-8 or as .xlsx") from None
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",\t;")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        rows = [(number, list(values)) for number, values in enumerate(reader, start=1)]
    except csv.Error as exc:
        raise SheetError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    name = {"\t": "tab", ",": "','", ";": "';'"}[delimiter]
    return _table(path, f"CSV, {encoding}, {name} separated", rows)


def _table(path: Path, source: str, rows: list[tuple[int, list[Any]]]) -> Table:
    for position, (number, values) in enumerate(rows):
        if any(not _empty(v) for v in values):
            headers = [_cell_text(v).strip() or f"column {n}" for n, v in enumerate(values, start=1)]
            return Table(str(path), source, number, headers, rows[position + 1:])
    raise SheetError(f"{path}: the sheet is empty (no header row)")


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    return str(value)


def _normal_header(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"\s+", "", text).strip("*")
    return text.lower()


def public_fields(kind: str) -> dict[str, str]:
    """The kind's fields as written in JSONL (aliases) → the model's attribute names."""
    model = KINDS[kind]
    return {info.alias or name: name for name, info in model.model_fields.items()}


def map_columns(kind: str, headers: list[str], overrides: dict[str, str] | None = None, file: str = "") -> ColumnMap:
    """Map each header to a field: ``overrides`` (header → field, ``-`` to ignore) first, then the defaults."""
    if kind not in KINDS:
        raise SheetError(f"unknown record kind {kind!r}; use one of {', '.join(KINDS)}")
    fields = public_fields(kind)
    known: dict[str, str] = {}
    for name in fields:
        known[_normal_header(name)] = name
    for name, names in HEADERS.get(kind, {}).items():
        for header in names:
            known.setdefault(_normal_header(header), name)
    for header in ID_HEADERS:
        known[_normal_header(header)] = ID_FIELD
    for header in EXTRA_HEADERS:
        known[_normal_header(header)] = EXTRA_FIELD
    overrides = overrides or {}
    by_header = {_normal_header(h): h for h in headers}
    for header, target in overrides.items():
        if _normal_header(header) not in by_header:
            raise SheetError(f"{file}: --map {header}={target}: the sheet has no column {header!r} "
                             f"(its columns: {', '.join(headers)})")
        if target != "-" and target not in fields:
            raise SheetError(f"--map {header}={target}: {kind} has no field {target!r}; "
                             f"use one of {', '.join(fields)} (or - to ignore the column)")
    chosen = {_normal_header(h): t for h, t in overrides.items()}
    mapped: dict[int, str] = {}
    ignored: list[str] = []
    taken: dict[str, str] = {}
    for index, header in enumerate(headers):
        key = _normal_header(header)
        target = chosen.get(key, known.get(key))
        if target is None or target == "-":
            ignored.append(header)
            continue
        if target in taken:
            raise SheetError(f"{file}: columns {taken[target]!r} and {header!r} both map to {target}; "
                             f"ignore one with --map {header}=- or map it elsewhere")
        taken[target] = header
        mapped[index] = target
    model = KINDS[kind]
    missing = [name for name, attr in fields.items()
               if name != ID_FIELD and model.model_fields[attr].is_required() and name not in taken]
    if missing:
        hint = f"; columns no field takes: {', '.join(ignored)}" if ignored else ""
        wanted = "; ".join(f"{m} (e.g. {'/'.join(HEADERS.get(kind, {}).get(m, (m,))[:3])})" for m in missing)
        raise SheetError(f"{file}: no column for the required field(s) {wanted}{hint}; "
                         f"name one with --map 列名=field")
    return ColumnMap(mapped, headers, ignored)


def parse_sheet(path: Path, kind: str, overrides: dict[str, str] | None = None) -> ParsedSheet:
    """Read ``path`` and validate every row as a ``kind`` record; bad rows are collected, not raised."""
    table = read_table(path)
    columns = map_columns(kind, table.headers, overrides, table.file)
    parsed = ParsedSheet(kind, table, columns, generated_ids=ID_FIELD not in columns.fields.values())
    model = KINDS[kind]
    attrs = public_fields(kind)
    kinds_of_field = {name: _shape(model.model_fields[attr].annotation) for name, attr in attrs.items()}
    header_of = {name: columns.header_of(name) for name in attrs}
    header_of.update({attr: header_of[name] for name, attr in attrs.items()})
    first_row_of: dict[str, int] = {}
    for number, cells in table.rows:
        if all(_empty(v) for v in cells):
            continue
        data: dict[str, Any] = {}
        problems: list[RowProblem] = []
        for index, name in columns.fields.items():
            value = cells[index] if index < len(cells) else None
            if _empty(value):
                continue
            try:
                data[name] = _convert(value, name, kinds_of_field[name])
            except ValueError as exc:
                problems.append(RowProblem(table.file, number, table.headers[index], str(exc)))
                data[name] = _UNREADABLE
        if len(parsed.preview) < PREVIEW_ROWS:
            parsed.preview.append((number, {name: _cell_text(cells[i]) if i < len(cells) else ""
                                            for i, name in columns.fields.items()}))
        if ID_FIELD not in data:
            data[ID_FIELD] = row_id(kind, data)
        id_column = header_of[ID_FIELD] if not parsed.generated_ids else "+".join(header_of[f] for f in IDENTITY[kind])
        row_key = str(data[ID_FIELD]).strip()
        if row_key in first_row_of:
            problems.append(RowProblem(table.file, number, id_column,
                                       f"duplicate id {row_key!r}: row {first_row_of[row_key]} has it too"))
        else:
            first_row_of[row_key] = number
        try:
            record = model.model_validate({k: v for k, v in data.items() if v is not _UNREADABLE})
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                name = str(error["loc"][0]) if error["loc"] else "-"
                if data.get(name) is _UNREADABLE:  # already reported by _convert
                    continue
                column = id_column if name == ID_FIELD else header_of.get(name, name)
                problems.append(RowProblem(table.file, number, column, _reason(name, error)))
        if problems:
            parsed.problems.extend(problems)
        else:
            parsed.records.append((number, record))
    return parsed


def _shape(annotation: Any) -> str:
    if typing.get_origin(annotation) is list:
        return "list"
    if annotation is int:
        return "int"
    if typing.get_origin(annotation) is dict:
        return "object"
    return "text"


def _convert(value: Any, name: str, shape: str) -> Any:
    if shape == "list":
        if not isinstance(value, str):
            return [_cell_text(value)]
        pattern = STRONG_SEPARATORS
        if name in TERM_LISTS and not re.search(STRONG_SEPARATORS, value):
            pattern = WEAK_SEPARATORS
        return [item.strip() for item in re.split(pattern, value) if item.strip()]
    if shape == "int":
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"expected a whole number, got {_cell_text(value)[:40]!r}")
    if shape == "object":
        try:
            data = json.loads(value) if isinstance(value, str) else None
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object ({exc.msg} at column {exc.colno})") from None
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object such as {\"来源\": \"…\"}")
        return data
    return value if isinstance(value, str) else _cell_text(value)


def _reason(name: str, error: dict[str, Any]) -> str:
    if error["type"] == "missing":
        return "required, but the cell is empty"
    if name == ID_FIELD and error["type"] == "string_pattern_mismatch":
        return ("not a usable id: 1–128 letters, digits or _.:- starting with a letter or digit "
                f"(got {str(error.get('input'))[:40]!r}{'…' if len(str(error.get('input'))) > 40 else ''})")
    return str(error["msg"])


def _normal_text(value: Any) -> str:
    text = unicodedata.normalize("NFKC", _cell_text(value) if not isinstance(value, str) else value)
    return re.sub(r"\s+", " ", text).strip()


def row_id(kind: str, data: dict[str, Any]) -> str:
    """The stable id of a row without an id: the kind's prefix and a hash of its identity fields, normalised."""
    key = "\x1f".join(_normal_text(data.get(name, "")) for name in IDENTITY[kind])
    return f"{ID_PREFIX[kind]}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:10]}"


def import_rows(parsed: ParsedSheet, corpus_dir: Path, dry_run: bool = False, skip_invalid: bool = False) -> ImportReport:
    """Write the sheet's good records into the corpus in one atomic replace; ``SheetInvalid`` (nothing written) when
    some rows are bad and ``skip_invalid`` is off. ``dry_run`` reports what would happen and writes nothing."""
    problems = list(parsed.problems)
    records = list(parsed.records)
    load = load_corpus(Path(corpus_dir))
    owners = {r.id: r.kind for r in load.records if r.kind != parsed.kind}
    id_column = parsed.columns.header_of(ID_FIELD) if not parsed.generated_ids else \
        "+".join(parsed.columns.header_of(f) for f in IDENTITY[parsed.kind])
    clashing = [(row, r) for row, r in records if r.id in owners]
    for row, record in clashing:
        problems.append(RowProblem(parsed.table.file, row, id_column,
                                   f"id {record.id!r} already belongs to a {owners[record.id]} record; "
                                   "ids are unique across kinds"))
    if clashing:
        taken = {id(r) for _, r in clashing}
        records = [(row, r) for row, r in records if id(r) not in taken]
    problems.sort(key=lambda p: p.row)
    if problems and not skip_invalid:
        raise SheetInvalid(problems)
    outcome = CorpusStore(Path(corpus_dir)).upsert_many([r for _, r in records], dry_run=dry_run)
    written = not dry_run and bool(outcome.added or outcome.updated)
    log.info("imported %s: %d added, %d updated, %d unchanged, %d skipped", parsed.table.file, len(outcome.added),
             len(outcome.updated), len(outcome.unchanged), len(problems))
    return ImportReport(outcome, problems, written)


def import_sheet(path: Path, corpus_dir: Path, kind: str, overrides: dict[str, str] | None = None,
                 dry_run: bool = False, skip_invalid: bool = False) -> ImportReport:
    """Parse ``path`` as ``kind`` records and import them (see ``parse_sheet`` and ``import_rows``)."""
    return import_rows(parse_sheet(path, kind, overrides), corpus_dir, dry_run, skip_invalid)


def export_headers(kind: str) -> dict[str, str]:
    """Public field name → the header ``export_sheet`` writes (the first default header, or the field's name)."""
    names = HEADERS.get(kind, {})
    headers = {ID_FIELD: ID_HEADERS[0]}
    for name in public_fields(kind):
        if name not in (ID_FIELD, EXTRA_FIELD):
            headers[name] = names.get(name, (name,))[0]
    return headers


def export_sheet(corpus_dir: Path, kind: str, path: Path) -> int:
    """Write every ``kind`` record of the corpus to an XLSX file with the default headers; the number written.

    Lists are joined with "；"; an 附加信息 column (JSON) appears when some record has ``extra``."""
    import openpyxl
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.utils.exceptions import IllegalCharacterError

    if kind not in KINDS:
        raise SheetError(f"unknown record kind {kind!r}; use one of {', '.join(KINDS)}")
    load = load_corpus(Path(corpus_dir))
    name = FILE_OF_KIND[kind]
    problems = [p for p in load.problems if Path(p.file).name == name]
    if problems:
        raise CorpusInvalid(problems)
    records = [r for r in load.records if r.kind == kind]
    headers = export_headers(kind)
    unsplittable = [f"{r.id} {name}" for r in records for name, value in record_to_json(r).items()
                    if isinstance(value, list) and name != EXTRA_FIELD and any(re.search(STRONG_SEPARATORS, v) for v in value)]
    if unsplittable:  # such an item would come back as two: refuse rather than export a sheet that imports differently
        raise SheetError(f"{len(unsplittable)} list item(s) hold ；, ;, | or a line break, which an import splits on "
                         f"({', '.join(unsplittable[:10])}); rewrite those items, then export again")
    with_extra = any(r.extra for r in records)
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet(kind)
    sheet.freeze_panes = "A2"
    sheet.append([*headers.values(), *([EXTRA_HEADERS[0]] if with_extra else [])])
    for record in records:
        data = record_to_json(record)
        values: list[Any] = []
        for field_name in headers:
            value = data.get(field_name)
            if isinstance(value, list):
                lone = len(value) == 1 and field_name in TERM_LISTS and re.search(WEAK_SEPARATORS, value[0])
                value = LIST_JOINER.join(value) + (LIST_JOINER if lone else "")  # "；" keeps a lone "a、b" whole
            values.append(value)
        if with_extra:
            values.append(json.dumps(record.extra, ensure_ascii=False, sort_keys=True) if record.extra else None)
        row = []
        for value in values:
            cell = WriteOnlyCell(sheet, value=value)
            if isinstance(value, str) and value.startswith("="):
                cell.data_type = "s"  # text, not a formula
            row.append(cell)
        try:
            sheet.append(row)
        except IllegalCharacterError:
            raise SheetError(f"{kind} {record.id}: holds a control character XLSX cannot store") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        book.save(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    log.info("exported %d %s records to %s", len(records), kind, path)
    return len(records)
