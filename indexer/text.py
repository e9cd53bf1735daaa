"""Text normalisation and tokenisation (jieba's algorithm and dictionary plus a domain dictionary).

``normalise`` folds full-width forms to half-width (NFKC) and Latin case. ``Tokenizer`` keeps model
numbers and measurements whole (``0i-mf``, ``810m``, ``φ20``, ``0.01mm``), also emitting their parts so a
partial model number still matches, and cuts Chinese in jieba's search mode.

The cutting runs in jieba-rs (``rjieba``), jieba's algorithm (prefix DAG, max-probability route, HMM for unknown
runs, search-mode sub-words) ported to Rust with jieba's own dictionary and HMM tables: 12× faster than the
Python jieba on the same text, which is most of a large build's time. On the bundled corpus the cuts are
identical piece for piece (``tests/indexer/test_text.py`` checks it); on the 100,780 Chinese pieces of csl and
cmrc2018, one differs, an HMM guess for characters outside the dictionary (``常在`` joined where Python jieba cuts it).
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import rjieba

TOKENIZER_VERSION = "jx-tok-2"  # bump when the cuts may change: the rjieba pin in pyproject.toml, the rules below

# A model number or measurement: starts with a letter, digit or Φ and mixes letters/digits with . - / ± ×.
_CODE = re.compile(r"[φ±]?[a-z0-9]+(?:[.\-/×*~][a-z0-9]+)*%?", re.IGNORECASE)
_SPLIT = re.compile(r"([φ±]?[a-z0-9]+(?:[.\-/×*~][a-z0-9]+)*%?)")
_CJK = re.compile(r"[\u3400-\u9fff]")
_PUNCT_ONLY = re.compile(r"^[\W_]+$")

_lock = threading.Lock()
_by_dictionary: dict[str, "Tokenizer"] = {}


@functools.lru_cache(maxsize=1)
def _converters():
    """OpenCC's traditional → simplified and simplified → traditional converters (~2 ms to load, once; their
    ``convert`` only reads the loaded dictionaries, so threads share them)."""
    import opencc

    return opencc.OpenCC("t2s"), opencc.OpenCC("s2t")


def simplified(text: str) -> str:
    """Traditional characters as simplified ones (OpenCC's phrase-aware t2s), the script the corpus and the craftsmen
    write: 焊縫氣孔怎麼辦 → 焊缝气孔怎么办. A character that already is a simplified form stays as it is — t2s alone turns
    坏 (broken) into 坯, and 坏了 is everyday shop-floor speech. Simplified text comes back unchanged (all 1,945
    questions under eval/ and the bundled corpus's 1,052 records)."""
    t2s, s2t = _converters()
    out = t2s.convert(text)
    if out == text or len(out) != len(text):
        return text
    return "".join(new if new == old or s2t.convert(old) == old else old for old, new in zip(text, out))


def normalise(text: str) -> str:
    """NFKC (full-width → half-width), lower-case, Φ/ϕ/⌀ unified to φ, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("ϕ", "φ").replace("⌀", "φ").replace("\x00", " ")
    return re.sub(r"\s+", " ", text).strip()


def _segmenter(words: Iterable[str]) -> rjieba.Jieba:
    """jieba's dictionary plus ``words``, each given the frequency that keeps it whole (jieba's ``suggest_freq``)."""
    segmenter = rjieba.Jieba()
    for word in words:
        segmenter.add_word(word, None, None)
    return segmenter


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
        self._segmenter = _segmenter(words)
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
            cut = self.cut(piece)
            kept, dropped = self._kept, self._dropped
            tokens.extend(t for t in cut if t in kept or (t not in dropped and self._keep(t)))
        return tokens

    def cut(self, chinese: str) -> list[str]:
        """jieba's search-mode cut of a run of Chinese text (words, then their dictionary sub-words), unfiltered."""
        return self._segmenter.cut_for_search(chinese, True)

    def _keep(self, token: str) -> bool:
        """Whether a cut token is a term (not space, a stop word or punctuation); remembered per token."""
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
    with _lock:
        cached = _by_dictionary.get(key)
    if cached is None:
        cached = Tokenizer(words, stop)
        with _lock:
            _by_dictionary[key] = cached
    return cached
