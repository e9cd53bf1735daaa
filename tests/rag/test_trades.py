"""The trade model files questions of trades no craftsman covers under their own trade, and only those."""

import numpy as np

from rag.analytics import Analytics
from rag.engine import published_trade
from rag.trades import MAX_MISLABELLED, TradeModel, fit_trade_model, load_trade_model
from tests.rag.test_engine import engine  # noqa: F401  (the mini corpus's engine, a fixture)

COVERED = {"焊接", "机加工"}


def clusters(seed: int = 0, per_trade: int = 40, dim: int = 16):
    """Questions of three trades as noisy copies of a centre each (焊接 and 机加工 covered, 注塑 not)."""
    rng = np.random.default_rng(seed)
    centres = {t: rng.normal(size=dim) for t in ("焊接", "机加工", "注塑")}
    x, labels, ids = [], [], []
    for trade, centre in centres.items():
        for i in range(per_trade):
            x.append(centre + rng.normal(scale=0.8, size=dim))
            labels.append(trade)
            ids.append(f"{trade}-{i}")
    return np.array(x), labels, ids, centres


def test_fitted_model_labels_the_uncovered_trade_and_keeps_covered_ones_below_the_allowed_share():
    x, labels, ids, centres = clusters()
    model, figures = fit_trade_model(x, labels, ids, COVERED, "e5", fitted_on="clusters")
    assert model.trades == ["机加工", "注塑", "焊接"] and model.model_id == "e5" and "clusters" in model.fitted_on
    assert figures["covered_mislabelled"] <= MAX_MISLABELLED and figures["uncovered_labelled_own_trade"] > 0.8
    assert model.uncovered_label(centres["注塑"], COVERED) == "注塑"
    assert model.uncovered_label(centres["焊接"], COVERED) is None  # a covered trade is never a label
    assert model.uncovered_label(centres["注塑"], COVERED | {"注塑"}) is None  # once someone covers it, voting decides


def test_a_model_belongs_to_the_embedder_it_was_fitted_with(tmp_path):
    x, labels, ids, _ = clusters(per_trade=10)
    model, _ = fit_trade_model(x, labels, ids, COVERED, "e5-small")
    model.save(tmp_path / "trades.json")
    assert load_trade_model(tmp_path, "e5-small").trades == model.trades
    assert load_trade_model(tmp_path, "another-embedder") is None


def sure_of(trade: str, trades: list[str], dim: int) -> TradeModel:
    """A model that, whatever the question, is sure it is of ``trade``."""
    return TradeModel(trades, [[0.0] * dim for _ in trades], [8.0 if t == trade else -8.0 for t in trades],
                      [0.0] * dim, [1.0] * dim, threshold=0.5, model_id="test")


def test_an_escalated_question_labelled_with_an_uncovered_trade_is_filed_under_it_and_still_routed(engine):  # noqa: F811
    question = "不锈钢管氩弧焊打底焊缝背面氧化发黑怎么办"
    dim = engine.live.get().embedder.dim
    engine._trades = sure_of("焊接", ["焊接", "注塑"], dim)  # a trade the mini corpus's craftsmen cover: no label
    voted = engine.ask(question, "ent-a").ticket
    engine._trades = sure_of("注塑", ["焊接", "注塑"], dim)
    labelled = engine.ask(question, "ent-b").ticket
    assert "注塑" not in voted.trades and voted.trades[0] == "焊接"
    assert labelled.trades == ["注塑", *voted.trades]  # the voted trades kept: their craftsmen's open pool still has it
    assert [r.craftsman_id for r in labelled.routes] == [r.craftsman_id for r in voted.routes]  # chosen by the voted trades
    assert labelled.routes[0].craftsman_id == "cm-m-2"  # the welder still answers it
    capacity = {r.trade: r for r in Analytics(engine.queue.engine, engine.live).capacity().trades}
    assert capacity["注塑"].open_tickets == 1 and capacity["注塑"].no_expert  # the programme sees the demand nobody covers


def test_a_published_answer_is_filed_under_the_first_trade_a_craftsman_covers():
    assert published_trade(["注塑", "机加工", "焊接"], ["焊接", "机加工"]) == "机加工"
    assert published_trade(["焊接"], ["焊接"]) == "焊接"
    assert published_trade(["注塑"], ["焊接"]) == "注塑" and published_trade([], ["焊接"]) == "综合"


def test_an_unreadable_trade_model_is_done_without(engine, tmp_path, caplog):  # noqa: F811
    (engine.config.index_dir / "trades.json").write_text('{"trades": ["注塑"], "unexpected": 1}', encoding="utf-8")
    engine._trades = False
    assert engine.trade_model is None and "trade model not loaded" in caplog.text
    assert engine.ask("不锈钢管氩弧焊打底焊缝背面氧化发黑怎么办", "ent-a").status == "escalated"
