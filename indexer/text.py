"""Text normalisation and tokenisation (jieba plus a domain dictionary).

``normalise`` folds full-width forms to half-width (NFKC) and Latin case. ``Tokenizer`` keeps model
numbers and measurements whole (``0i-mf``, ``810m``, ``φ20``, ``0.01mm``), also emitting their parts so a
partial model number still matches, and cuts Chinese with jieba in search mode. jieba's base dictionary
is read once per process; each domain dictionary gets a cheap copy of it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import jieba

jieba.setLogLevel(logging.WARNING)
log = logging.getLogger(__name__)

TOKENIZER_VERSION = "jx-tok-1"

# A model number or measurement: starts with a letter, digit or Φ and mixes letters/digits with . - / ± ×.
_CODE = re.compile(r"[φ±]?[a-z0-9]+(?:[.\-/×*~][a-z0-9]+)*%?", re.IGNORECASE)
_SPLIT = re.compile(r"([φ±]?[a-z0-9]+(?:[.\-/×*~][a-z0-9]+)*%?)")
_CJK = re.compile(r"[\u3400-\u9fff]")
_PUNCT_ONLY = re.compile(r"^[\W_]+$")

_base_lock = threading.Lock()
_base: jieba.Tokenizer | None = None
_by_dictionary: dict[str, "Tokenizer"] = {}


def normalise(text: str) -> str:
    """NFKC (full-width → half-width), lower-case, Φ/ϕ/⌀ unified to φ, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("ϕ", "φ").replace("⌀", "φ").replace("\x00", " ")
    return re.sub(r"\s+", " ", text).strip()


def _base_tokenizer() -> jieba.Tokenizer:
    global _base
    with _base_lock:
        if _base is None:
            base = jieba.Tokenizer()
            base.initialize()
            _base = base
        return _base


def _derived_jieba(words: Iterable[str]) -> jieba.Tokenizer:
    base = _base_tokenizer()
    derived = jieba.Tokenizer()
    derived.FREQ = dict(base.FREQ)
    derived.total = base.total
    derived.initialized = True
    for word in words:
        derived.add_word(word, freq=None)
    return derived


def dictionary_words(lines: Iterable[str]) -> list[str]:
    """Clean dictionary entries: normalised, at least two characters, one per entry, sorted."""
    words = set()
    for line in lines:
        word = normalise(line.split("\t")[0].split(" ")[0]) if line.strip() else ""
        if len(word) >= 2 and not _PUNCT_ONLY.match(word):
            words.add(word)
    return sorted(words)


class Tokenizer:
    """Tokenises normalised text into BM25 terms with a fixed domain dictionary and stop words."""

    def __init__(self, words: list[str], stopwords: set[str]) -> None:
        self.words = words
        self.stopwords = stopwords
        self._jieba = _derived_jieba(words)
        self._lock = threading.Lock()
        self._kept: set[str] = set()
        self._dropped: set[str] = set()

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(TOKENIZER_VERSION.encode())
        digest.update("\n".join(self.words).encode())
        digest.update(b"\x00" + "\n".join(sorted(self.stopwords)).encode())
        return digest.hexdigest()[:16]

    def tokenize(self, text: str) -> list[str]:
        """Terms of ``text`` in order; repeated terms stay repeated (BM25 counts them)."""
        tokens: list[str] = []
        for piece in _SPLIT.split(normalise(text)):
            if not piece:
                continue
            if _CODE.fullmatch(piece):
                tokens.append(piece)
                parts = [p for p in re.split(r"[\-/×*~]", piece) if p]
                if len(parts) > 1:
                    tokens.extend(parts)
                continue
            if not _CJK.search(piece):
                continue
            with self._lock:
                cut = list(self._jieba.cut_for_search(piece, HMM=True))
            kept, dropped = self._kept, self._dropped
            tokens.extend(t for t in cut if t in kept or (t not in dropped and self._keep(t)))
        return tokens

    def _keep(self, token: str) -> bool:
        """Whether a jieba token is a term (not space, a stop word or punctuation); remembered per token."""
        keep = bool(token.strip()) and token not in self.stopwords and not _PUNCT_ONLY.match(token)
        remembered = self._kept if keep else self._dropped
        if len(remembered) > 500_000:
            remembered.clear()
        remembered.add(token)
        return keep


def load_tokenizer(dictionary_file: Path, stopwords_file: Path) -> Tokenizer:
    """The process-wide tokenizer for these dictionary and stop-word files (built once per content)."""
    words = dictionary_words(Path(dictionary_file).read_text(encoding="utf-8").splitlines())
    stop = set(dictionary_words([]))
    if Path(stopwords_file).exists():
        stop = {normalise(w) for w in Path(stopwords_file).read_text(encoding="utf-8").split() if w.strip()}
    key = hashlib.sha256(("\n".join(words) + "\x00" + "\n".join(sorted(stop))).encode()).hexdigest()
    with _base_lock:
        cached = _by_dictionary.get(key)
    if cached is None:
        cached = Tokenizer(words, stop)
        with _base_lock:
            _by_dictionary[key] = cached
    return cached
