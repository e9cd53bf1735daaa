"""Records → chunks and BM25 terms, the one analysis every build, delta and merge runs.

A record's text is tokenised sentence by sentence, each distinct sentence once: a body chunk's terms are its
title's terms followed by its sentences' terms, a head or alias chunk's the terms of its own sentences (a head
repeats the record's first sentences), the record's own terms (for whole-record BM25) its title's followed by
every sentence's. Sentences end at punctuation that jieba never joins across, so this equals tokenising each text
whole (but where a sentence was cut for length), at under half the cost: chunks overlap by a sentence, repeat
the title, and the head repeats the lead.

``analyse_batch`` turns many records into compact arrays (a batch vocabulary, term ids and counts per document)
so that a process pool can analyse a large corpus and hand back numpy arrays rather than millions of strings.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from itertools import repeat
from dataclasses import dataclass

import numpy as np

from indexer.chunking import Chunk, chunk_parts, split_sentences
from indexer.records import Record, record_to_json
from indexer.text import Tokenizer, normalise

DEFAULT_DENSE_ROLES = ("head", "alias")
TRADE_SEPARATOR = "\x1f"  # between a record's trades in the payload table (filters match whole trades)


@dataclass
class Analysed:
    """One record ready to index: its chunks with their terms and its whole-record terms."""

    record: Record
    chunks: list[Chunk]
    chunk_terms: list[list[str]]
    record_terms: list[str]


def analyse(record: Record, tokenizer: Tokenizer) -> Analysed:
    """Chunks and terms of one record (deterministic for a given tokenizer)."""
    memo: dict[str, list[str]] = {}

    def terms(text: str) -> list[str]:
        found = memo.get(text)
        if found is None:
            found = memo[text] = tokenizer.tokenize(text)
        return found

    title = terms(record.title)
    chunks, chunk_terms = [], []
    for c, sentences in chunk_parts(record):
        chunks.append(c)
        if sentences is None:  # a head (title and lead, cut at HEAD_CHARS) or an alias: its sentences mostly repeat
            chunk_terms.append([t for s in split_sentences(c.text) for t in terms(s)])
        else:
            chunk_terms.append([*title, *(t for s in sentences for t in terms(s))])
    whole = list(title)
    for section in record.sections():
        for sentence in split_sentences(section):
            whole.extend(terms(sentence))
    return Analysed(record, chunks, chunk_terms, whole)


def ranking_texts(record: Record) -> tuple[str, str]:
    """(head, full): the normalised title and keywords, and the normalised title, keywords and every section."""
    keywords = " ".join(getattr(record, "keywords", []) or [])
    return normalise(f"{record.title} {keywords}"), normalise(" ".join([record.title, keywords, *record.sections()]))


@dataclass
class Postings:
    """Documents of one field in one batch: term ids into ``vocab``, counts, and each document's length."""

    doc: np.ndarray  # int32, batch-local document number, one entry per (document, distinct term)
    term: np.ndarray  # int32, index into the batch vocabulary
    tf: np.ndarray  # int32
    length: np.ndarray  # int32, one per document


@dataclass
class AnalysedBatch:
    """Many records analysed: rows to store, postings of both fields over one batch vocabulary."""

    vocab: list[str]
    chunk_rows: list[tuple[str, str, str, str, str, str]]  # chunk id, record id, kind, title, role, text
    record_rows: list[tuple]  # id, kind, json, hash, head, full, head chunk id, trades (\x1f-joined), date
    chunks: Postings
    records: Postings


class _Vocabulary(dict):
    """Term → id, a new term getting the next id on first lookup (so a whole document maps in one C-level loop)."""

    def __missing__(self, term: str) -> int:
        self[term] = found = len(self)
        return found


def _postings(docs: Sequence[Sequence[str]], vocab: _Vocabulary) -> Postings:
    doc_ids: list[int] = []
    term_ids: list[int] = []
    counts: list[int] = []
    for d, terms in enumerate(docs):
        counted = Counter(terms)
        term_ids.extend(map(vocab.__getitem__, counted))
        counts.extend(counted.values())
        doc_ids.extend(repeat(d, len(counted)))
    lengths = np.fromiter(map(len, docs), dtype=np.int32, count=len(docs))
    return Postings(np.asarray(doc_ids, dtype=np.int32), np.asarray(term_ids, dtype=np.int32),
                    np.asarray(counts, dtype=np.int32), lengths)


def analyse_batch(records: Sequence[Record], tokenizer: Tokenizer) -> AnalysedBatch:
    """Analyse ``records`` into arrays (see ``AnalysedBatch``)."""
    vocab = _Vocabulary()
    chunk_rows, record_rows, chunk_docs, record_docs = [], [], [], []
    for record in records:
        a = analyse(record, tokenizer)
        head, full = ranking_texts(record)
        record_rows.append((record.id, record.kind, json.dumps(record_to_json(record), ensure_ascii=False),
                            record.content_hash(), head, full, a.chunks[0].chunk_id if a.chunks else "",
                            TRADE_SEPARATOR.join(record.trades), record.when()))
        record_docs.append(a.record_terms)
        for c, terms in zip(a.chunks, a.chunk_terms):
            chunk_rows.append((c.chunk_id, c.record_id, c.kind, c.title, c.role, c.text))
            chunk_docs.append(terms)
    chunks = _postings(chunk_docs, vocab)
    whole = _postings(record_docs, vocab)
    return AnalysedBatch(list(vocab), chunk_rows, record_rows, chunks, whole)
