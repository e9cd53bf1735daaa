"""Filters by kind, trade and date restrict every retriever to the matching records, and nothing else changes."""

import numpy as np
import pytest

from indexer.ports import Filters
from indexer.store import IndexStore
from indexer.version import IndexVersion
from rag.retrieve import HybridRetriever

QUESTIONS = ["焊缝气孔怎么办", "细长轴车削振动", "伺服报警SV0401", "输送带跑偏"]


@pytest.fixture(scope="module")
def version(mini_index, embedder) -> IndexVersion:
    return IndexVersion(IndexStore(mini_index).current_path(), embedder)


def record_of(version, hit):
    return version.records.get(hit.record_id)


@pytest.mark.parametrize("filters", [Filters(kinds=("course",)), Filters(kinds=("achievement", "standard_question")),
                                     Filters(trades=("焊接",)), Filters(date_from="2020-01-01", date_to="2021-12-31"),
                                     Filters(kinds=("achievement",), trades=("机加工",))])
def test_every_hit_matches_the_filters_and_none_is_lost(version, filters):
    for q in QUESTIONS:
        terms = version.tokenizer.tokenize(q)
        vector = version.embedder.embed_queries([q])[0]
        for hits, everything in ((version.sparse.search(terms, 50, filters), version.sparse.search(terms, 1000)),
                                 (version.sparse.search_records(terms, 50, filters), version.sparse.search_records(terms, 1000)),
                                 (version.dense.search(vector, 50, filters=filters), version.dense.search(vector, 1000))):
            for hit in hits:
                record = record_of(version, hit)
                assert not filters.kinds or record.kind in filters.kinds
                assert not filters.trades or set(record.trades) & set(filters.trades)
                assert not filters.date_from or filters.date_from <= record.when() <= (filters.date_to or "9999")
            # the filtered list is exactly the unfiltered one restricted to the matching records, same scores
            matching = [h for h in everything if h.record_id in {r.id for r in version.records.get_many(
                x.record_id for x in everything).values() if (not filters.kinds or r.kind in filters.kinds)
                and (not filters.trades or set(r.trades) & set(filters.trades))
                and (not filters.date_from or filters.date_from <= r.when() <= (filters.date_to or "9999"))}]
            assert [h.chunk_id for h in hits] == [h.chunk_id for h in matching[:50]]
            assert np.allclose([h.score for h in hits], [h.score for h in matching[:50]])


def test_hybrid_retrieval_honours_filters_and_an_empty_filter_changes_nothing(version):
    retriever = HybridRetriever(version)
    assert [c.record_id for c in retriever.retrieve("焊缝气孔", filters=Filters())] == \
           [c.record_id for c in retriever.retrieve("焊缝气孔")]
    found = retriever.retrieve("焊缝气孔", filters=Filters(kinds=("craftsman",)))
    assert found and all(c.kind == "craftsman" for c in found)
    assert retriever.retrieve("焊缝气孔", filters=Filters(trades=("没有这个工种",))) == []


@pytest.mark.parametrize("value, fine", [("2020-01-05", True), ("2024-02-29", True), ("", True), ("2020-13-45", False),
                                         ("2020-02-30", False), ("2023-02-29", False), ("2020-W01-1", False),
                                         ("20200105", False), ("2020-1-5", False), ("２０２０-01-05", False)])
def test_a_date_filter_must_be_a_calendar_date_written_yyyy_mm_dd(value, fine):
    for filters in (Filters(date_from=value), Filters(date_to=value)):
        assert (filters.date_problems() == []) is fine, (value, filters.date_problems())
