"""Dense vector index over faiss: exact inner product up to a configurable size, HNSW above it.

Vectors are L2-normalised, so inner product is cosine similarity. The model id, dimension and index
type are saved beside the index; loading with another model is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from indexer.errors import IndexCorrupt, IndexMismatchError


@dataclass(frozen=True)
class VectorMeta:
    model_id: str
    dim: int
    count: int
    kind: str
    normalised: bool = True


class VectorIndex:
    """Maps row ids (ints chosen by the caller) to unit vectors and finds nearest neighbours."""

    def __init__(self, index: faiss.Index, meta: VectorMeta) -> None:
        self.index = index
        self.meta = meta

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, model_id: str, exact_max: int = 200_000,
              hnsw_m: int = 32, ef_search: int = 128) -> "VectorIndex":
        """Exact ``IndexIDMap2(IndexFlatIP)`` up to ``exact_max`` vectors, ``HNSW`` (inner product) above."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = vectors.shape[1]
        if len(vectors) <= exact_max:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            kind = "flat-ip"
        else:
            hnsw = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efSearch = ef_search
            index = faiss.IndexIDMap2(hnsw)
            kind = f"hnsw-ip-m{hnsw_m}"
        if len(vectors):
            index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        return cls(index, VectorMeta(model_id, dim, len(vectors), kind))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of shape (n_queries, ≤k), best first; missing slots dropped."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.meta.count)
        if k == 0:
            return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
        scores, ids = self.index.search(queries, k)
        return ids, scores

    def save(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        index_path, meta_path = folder / "vectors.faiss", folder / "vectors.json"
        faiss.write_index(self.index, str(index_path))
        meta_path.write_text(json.dumps(asdict(self.meta)), encoding="utf-8")
        return [index_path, meta_path]

    @classmethod
    def load(cls, folder: Path, model_id: str, dim: int) -> "VectorIndex":
        """Load, refusing an index built by another model than the configured one."""
        try:
            meta = VectorMeta(**json.loads((folder / "vectors.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise IndexCorrupt(f"vector index metadata in {folder} cannot be read: {exc}") from exc
        if meta.model_id != model_id or meta.dim != dim:
            raise IndexMismatchError(
                f"the index in {folder} was built with embedder {meta.model_id!r} ({meta.dim}-d) but "
                f"{model_id!r} ({dim}-d) is configured; re-index with --full or configure the same embedder"
            )
        index = faiss.read_index(str(folder / "vectors.faiss"))
        if index.ntotal != meta.count or index.d != meta.dim:
            raise IndexCorrupt(f"vector index in {folder} holds {index.ntotal}×{index.d}, manifest says {meta.count}×{meta.dim}")
        return cls(index, meta)
