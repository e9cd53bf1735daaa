"""Split records into passages: sentence-aware, bounded length, one sentence of overlap.

Every record yields one *head* chunk (its title and lead: what dense retrieval embeds) and body chunks
over its full text (what BM25 indexes and answers quote). A chunk keeps its parent record id and kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from indexer.records import Record, StandardQuestion

MAX_CHARS = 240
HEAD_CHARS = 200
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;\n])")


@dataclass(frozen=True)
class Chunk:
    """A passage of one record. ``role`` is head, alias (a standard question's paraphrase) or body."""

    chunk_id: str
    record_id: str
    kind: str
    title: str
    role: str
    text: str

    @property
    def dense(self) -> bool:
        """Whether the dense index embeds this chunk (heads and aliases: short and representative)."""
        return self.role in ("head", "alias")

    @property
    def indexed_text(self) -> str:
        """What BM25 tokenises: body chunks carry their record's title for context."""
        return self.text if self.role != "body" else f"{self.title}。{self.text}"


def record_text(record: Record) -> str:
    """A record's whole text (title and every section): what the record-level BM25 indexes."""
    return "\n".join([record.title, *record.sections()])


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` with their closing punctuation; over-long sentences cut at MAX_CHARS."""
    out: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        while len(sentence) > MAX_CHARS:
            out.append(sentence[:MAX_CHARS])
            sentence = sentence[MAX_CHARS:]
        if sentence:
            out.append(sentence)
    return out


def pack_groups(sentences: list[str], max_chars: int = MAX_CHARS) -> list[list[str]]:
    """Greedy packing of sentences into groups of at most ``max_chars``, overlapping by one sentence."""
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for sentence in sentences:
        if current and size + len(sentence) > max_chars:
            groups.append(current)
            overlap = current[-1] if len(current) > 1 and len(current[-1]) + len(sentence) <= max_chars else None
            current, size = ([overlap], len(overlap)) if overlap else ([], 0)
        current.append(sentence)
        size += len(sentence)
    if current:
        groups.append(current)
    return groups


def pack(sentences: list[str], max_chars: int = MAX_CHARS) -> list[str]:
    """Passages of at most ``max_chars`` (``pack_groups`` joined)."""
    return ["".join(group) for group in pack_groups(sentences, max_chars)]


def chunk_parts(record: Record) -> list[tuple[Chunk, list[str] | None]]:
    """All chunks of one record, in reading order, with ids ``<record id>#<n>``; a body chunk comes with the
    sentences it packs (so each sentence is tokenised once per record), a head or alias chunk with None."""
    title = record.title
    texts: list[tuple[str, str, list[str] | None]] = [("head", record.head()[:HEAD_CHARS], None)]
    if isinstance(record, StandardQuestion):
        texts.extend(("alias", alias, None) for alias in record.aliases)
    if record.separate_sections:
        for section in record.sections():
            texts.extend(("body", "".join(group), group) for group in pack_groups(split_sentences(section)))
    else:
        sentences: list[str] = []
        for section in record.sections():
            sentences.extend(split_sentences(section))
        texts.extend(("body", "".join(group), group) for group in pack_groups(sentences))
    return [
        (Chunk(f"{record.id}#{n}", record.id, record.kind, title, role, text), group)
        for n, (role, text, group) in enumerate(texts)
        if text.strip()
    ]


def chunk(record: Record) -> list[Chunk]:
    """All chunks of one record, in reading order, with ids ``<record id>#<n>``."""
    return [c for c, _ in chunk_parts(record)]
