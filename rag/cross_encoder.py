"""Optional re-ranking with a sentence-transformers CrossEncoder loaded from a configured local folder.

It re-orders the ranker's top candidates by the cross-encoder's score of (question, best passage); the
ranker's scores stay as they are, so re-fit the confidence calibration (``jiangxin fit``) after enabling it.
"""

from __future__ import annotations

from pathlib import Path

from indexer.errors import JiangxinError
from indexer.version import IndexVersion
from rag.rank import Scored


class CrossEncoderReranker:
    def __init__(self, path: str, depth: int = 20) -> None:
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            raise JiangxinError("the cross-encoder needs the 'st' extra: pip install 'jiangxin[st]'") from exc
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise JiangxinError(f"cross-encoder {path!r} is not a local folder")
        try:
            self.model = CrossEncoder(str(folder), device="cpu", local_files_only=True)
        except (OSError, ValueError) as exc:
            raise JiangxinError(f"cannot load cross-encoder from {folder}: {exc}") from exc
        self.depth = depth

    def rerank(self, question: str, ranked: list[Scored], version: IndexVersion) -> list[Scored]:
        rows = version.chunks.get_many(s.candidate.chunk_ids[0] for s in ranked[: self.depth] if s.candidate.chunk_ids)
        head = [s for s in ranked[: self.depth] if s.candidate.chunk_ids and s.candidate.chunk_ids[0] in rows]
        if not head:
            return ranked
        passages = [rows[s.candidate.chunk_ids[0]] for s in head]
        scores = self.model.predict([(question, f"{p.title}。{p.text}") for p in passages], show_progress_bar=False)
        order = sorted(range(len(head)), key=lambda i: (-float(scores[i]), head[i].candidate.record_id))
        rest = [s for s in ranked if s not in head]
        return [head[i] for i in order] + rest
