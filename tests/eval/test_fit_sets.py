"""Which questions the confidence is calibrated on: the sets in users' own words and the out-of-domain ones,
never eval/sample (written alongside the corpus) and never a held-out part."""

import json
from pathlib import Path

import numpy as np

from api.cli import CALIBRATION_SETS, FIT_SETS, HELD_OUT_SETS, _calibration_part
from eval.answers import Observation
from eval.datasets import load_beir

ROOT = Path(__file__).resolve().parents[2]


def observation(query_id: str, group: str) -> Observation:
    empty = np.zeros(1)
    return Observation(query_id, group, False, False, empty, empty.reshape(1, 1), empty, empty)


def test_calibration_keeps_the_field_and_regulation_fit_parts_and_the_out_of_domain_questions(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    ood = tmp_path / "cail2019-dev"
    ood.mkdir()
    (ood / "questions.jsonl").write_text('{"_id": "ood-1", "text": "被告人何时到案？"}\n', encoding="utf-8")
    sample = load_beir(ROOT / "eval" / "sample").queries[:5]
    field = [q for name in ("field", "field2") for q in load_beir(ROOT / "eval" / name, part="fit").queries[:5]]
    regs = load_beir(ROOT / "eval" / "regs", part="fit").queries[:5]
    observations = ([observation(q.id, "answerable") for q in sample + field]
                    + [observation(q.id, "uncovered") for q in regs] + [observation("ood-1", "ood")])
    kept, name = _calibration_part(observations, CALIBRATION_SETS, [ood], 400)
    assert {o.query_id for o in kept} == {q.id for q in field + regs} | {"ood-1"}
    assert name == "field-fit + field2-fit + regs-fit + cail2019-dev [0:400]"


def test_no_held_out_part_is_fitted_on():
    assert all(not s.endswith(":heldout") for s in FIT_SETS)
    assert set(CALIBRATION_SETS) <= set(FIT_SETS)
    fit_ids = {q.id for spec in FIT_SETS if ":" in spec
               for q in load_beir(ROOT / spec.split(":")[0], part=spec.split(":")[1]).queries}
    held_ids = {q.id for spec in HELD_OUT_SETS for q in load_beir(ROOT / spec.split(":")[0], part=spec.split(":")[1]).queries}
    assert fit_ids and held_ids and not fit_ids & held_ids


def test_no_fit_question_is_a_near_twin_of_a_held_out_one():
    """Writers of different sets may word a question alike: a fit question sharing most of its character bigrams with
    a held-out one (Dice >= 0.8: "变频器一启动就报过留" beside "变频器一启动就报过流") would fit on the held-out part."""
    from rag.rank import bigrams, dice

    held = [bigrams(q.text) for spec in HELD_OUT_SETS
            for q in load_beir(ROOT / spec.split(":")[0], part=spec.split(":")[1]).queries]
    twins = [q.text for spec in FIT_SETS
             for q in load_beir(ROOT / spec.split(":")[0], part=(spec.split(":") + [None])[1]).queries
             if any(dice(bigrams(q.text), h) >= 0.8 for h in held)]
    assert held and twins == []


def test_an_out_of_domain_question_judged_industrial_counts_as_in_domain(tmp_path, monkeypatch):
    import eval.answers as answers

    folder = tmp_path / "webqueries"
    folder.mkdir()
    rows = [{"_id": "w-1", "text": "1110柴油机大修"}, {"_id": "w-2", "text": "宝宝打喷嚏吃什么药"}]
    (folder / "questions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "webqueries.tsv").write_text("w-1\tin\nw-2\tout\n", encoding="utf-8")
    monkeypatch.setattr(answers, "SCOPE_LABELS", labels)
    scopes = {q.id: q.scope for q in answers.load_ood(folder, 10)}
    assert scopes == {"w-1": "in_domain", "w-2": "out_of_scope"}


def test_the_scope_models_extra_out_of_domain_questions_are_never_reported(tmp_path):
    """Fit slice [0:400], reported slice [400:1400], the scope model's extra slice after it: disjoint question ids."""
    from api.cli import FIT_OOD, REPORT_OOD, SCOPE_OOD
    from eval.answers import load_ood

    folder = tmp_path / "cail2019-dev"
    folder.mkdir()
    rows = [{"_id": f"q-{i}", "text": f"问题{i}"} for i in range(SCOPE_OOD[1] + 50)]
    (folder / "questions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    fit = {q.id for q in load_ood(folder, FIT_OOD, 0)}
    reported = {q.id for q in load_ood(folder, REPORT_OOD, FIT_OOD)}
    scope_only = {q.id for q in load_ood(folder, SCOPE_OOD[1] - SCOPE_OOD[0], SCOPE_OOD[0])}
    assert len(fit) == FIT_OOD and len(reported) == REPORT_OOD and len(scope_only) == SCOPE_OOD[1] - SCOPE_OOD[0]
    assert not fit & reported and not reported & scope_only and not fit & scope_only


def test_a_report_cannot_reach_into_the_scope_models_questions():
    from typer.testing import CliRunner

    from api.cli import REPORT_OOD, app

    result = CliRunner().invoke(app, ["eval", "--answers", "--ood-count", str(REPORT_OOD + 1)])
    assert result.exit_code == 1
    assert "fit the scope model" in result.output


def test_fitting_cannot_take_the_reported_out_of_domain_questions():
    from typer.testing import CliRunner

    from api.cli import FIT_OOD, app

    result = CliRunner().invoke(app, ["fit", "--ood-count", str(FIT_OOD + 1)])
    assert result.exit_code == 2
    assert "fit on at most" in result.output
