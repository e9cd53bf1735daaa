"""BEIR-layout data sets (corpus.jsonl, queries.jsonl, qrels.tsv), read with clear errors.

A folder may name a Jiangxin corpus instead of holding ``corpus.jsonl``: ``dataset.json`` with
``{"jiangxin_corpus": "<path relative to the folder>"}`` (the bundled sample's question set does this).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from indexer.errors import DatasetError
from indexer.records import Passage, Record, load_corpus


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    type: str = ""
    answerable: bool = True
    trade: str = ""
    scope: str = "in_domain"  # in_domain or out_of_scope
    split: str = ""  # fit or heldout, where the data set is split


@dataclass
class Dataset:
    name: str
    records: list[Record]
    queries: list[Query]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def judged(self) -> list[Query]:
        """Queries with at least one relevant document (the ones retrieval metrics are computed on)."""
        return [q for q in self.queries if any(g > 0 for g in self.qrels.get(q.id, {}).values())]


def _jsonl(path: Path) -> list[tuple[int, dict]]:
    if not path.exists():
        raise DatasetError(f"{path}: file is missing")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object")
            rows.append((number, row))
    return rows


def _text(path: Path, number: int, row: dict, key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{path}:{number}: field {key!r} must be non-empty text")
    return value


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.exists():
        raise DatasetError(f"{path}: file is missing")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("\t")
            if number == 1 and parts[:2] == ["query-id", "corpus-id"]:
                continue
            if not line.strip():
                continue
            if len(parts) != 3:
                raise DatasetError(f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', got {len(parts)} field(s)")
            try:
                grade = int(parts[2])
            except ValueError:
                raise DatasetError(f"{path}:{number}: score {parts[2]!r} is not an integer") from None
            qrels.setdefault(parts[0], {})[parts[1]] = grade
    return qrels


def load_beir(folder: Path, max_queries: int | None = None, part: str | None = None) -> Dataset:
    """Load a BEIR folder; ``DatasetError`` names the file and line of the first problem.

    ``part`` keeps only the queries of one split (``fit`` or ``heldout``) of a set that declares parts.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: data set folder does not exist")
    meta_path = folder / "dataset.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        load = load_corpus((folder / meta["jiangxin_corpus"]).resolve())
        if load.problems:
            raise DatasetError(f"{folder}: its corpus has problems, first: {load.problems[0]}")
        records = load.records
    else:
        corpus_path = folder / "corpus.jsonl"
        records = []
        for number, row in _jsonl(corpus_path):
            doc_id = _text(corpus_path, number, row, "_id")
            text = _text(corpus_path, number, row, "text")
            records.append(Passage(id=doc_id, title=str(row.get("title") or ""), text=text))
    queries_path = folder / "queries.jsonl"
    queries = []
    skipped = []
    for number, row in _jsonl(queries_path):
        answerable = row.get("answerable", True)
        if isinstance(row.get("text"), str) and not row["text"].strip():
            skipped.append(f"{queries_path}:{number}: query {row.get('_id')!r} has empty text; skipped")
            continue
        if part is not None and row.get("split") != part:
            continue
        queries.append(Query(_text(queries_path, number, row, "_id"), _text(queries_path, number, row, "text"),
                             str(row.get("type", "")), bool(answerable), str(row.get("trade", "")),
                             str(row.get("scope") or ("in_domain" if answerable else "")), str(row.get("split", ""))))
    qrels = load_qrels(folder / "qrels.tsv")
    ids = {r.id for r in records}
    for qid, docs in qrels.items():
        missing = [d for d in docs if d not in ids]
        if missing:
            raise DatasetError(f"{folder / 'qrels.tsv'}: query {qid} judges unknown document {missing[0]!r}")
    if part is not None and not queries:
        raise DatasetError(f"{queries_path}: no query belongs to part {part!r}")
    if max_queries is not None and len(queries) > max_queries:
        queries = sorted(queries, key=lambda q: _stable_hash(q.id))[:max_queries]
        queries.sort(key=lambda q: q.id)
    name = folder.name if part is None else f"{folder.name}-{part}"
    return Dataset(name, records, queries, qrels, skipped)


def _stable_hash(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()
