from indexer.chunking import MAX_CHARS, chunk, pack, split_sentences
from indexer.records import Achievement, StandardQuestion


def test_long_text_becomes_bounded_overlapping_passages():
    sentences = [f"第{i}句讲的是细长轴车削中的一个要点，说明参数和原因。" for i in range(40)]
    passages = pack(sentences)
    assert len(passages) > 1
    assert all(len(p) <= MAX_CHARS for p in passages)
    for before, after in zip(passages, passages[1:]):
        assert before.split("。")[-2] + "。" == after.split("。")[0] + "。"  # one sentence of overlap
    assert "".join(passages).count("第39句") >= 1


def test_sentence_longer_than_limit_is_cut():
    parts = split_sentences("很" * (MAX_CHARS * 2 + 5))
    assert [len(p) for p in parts] == [MAX_CHARS, MAX_CHARS, 5]


def test_chunks_keep_parent_id_kind_and_roles():
    sq = StandardQuestion(id="sq-1", question="焊缝气孔怎么办", answer="1. 烘干焊条。2. 清理坡口。", aliases=["焊缝老有小孔"],
                          trade="焊接")
    chunks = chunk(sq)
    assert [(c.chunk_id, c.role) for c in chunks] == [("sq-1#0", "head"), ("sq-1#1", "alias"), ("sq-1#2", "body")]
    assert {(c.record_id, c.kind) for c in chunks} == {("sq-1", "standard_question")}
    assert [c.dense for c in chunks] == [True, True, False]


def test_achievement_body_covers_every_section():
    ach = Achievement(id="a-1", title="跟刀架改进", summary="总结。", problem="问题在此。", solution="方法在此。",
                      benefits="效果在此。", trade="机加工", authors=["王"], unit="一车间", year=2020)
    body = "".join(c.text for c in chunk(ach) if c.role == "body")
    for part in ("总结", "问题在此", "方法在此", "效果在此"):
        assert part in body
