"""Baselines every report compares against, run in the same process on the same data.

(a) rank-bm25 ``BM25Okapi`` over plain ``jieba.lcut`` tokens of whole documents — what most users write
first; (b) dense-only with the same embedder (Jiangxin's dense mode); (c) the common "ensemble" hybrid:
BM25 and dense lists fused by reciprocal-rank fusion with k=60 and equal weights (``rag.retrieve.BASELINE_RRF``).
"""

from __future__ import annotations

import jieba
import numpy as np
from rank_bm25 import BM25Okapi

from indexer.records import Record


class RankBM25Jieba:
    """BM25Okapi over ``jieba.lcut`` of each record's full text (title and sections), no chunking."""

    name = "rank_bm25_jieba"

    def __init__(self, records: list[Record]) -> None:
        self.ids = [r.id for r in records]
        self.bm25 = BM25Okapi([jieba.lcut(f"{r.title}\n" + "\n".join(r.sections())) for r in records])

    def search(self, question: str, k: int = 100) -> list[str]:
        scores = self.bm25.get_scores(jieba.lcut(question))
        top = np.argpartition(-scores, min(k, len(scores) - 1))[:k] if len(scores) > k else np.arange(len(scores))
        ranked = sorted(top.tolist(), key=lambda i: (-scores[i], self.ids[i]))
        return [self.ids[i] for i in ranked if scores[i] > 0]
