"""Which questions the confidence is calibrated on: the sets in users' own words and the out-of-domain ones,
never eval/sample (written alongside the corpus) and never a held-out part."""

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
    (tmp_path / "cail2019-dev").mkdir()
    sample = load_beir(ROOT / "eval" / "sample").queries[:5]
    field = load_beir(ROOT / "eval" / "field", part="fit").queries[:5]
    regs = load_beir(ROOT / "eval" / "regs", part="fit").queries[:5]
    observations = ([observation(q.id, "answerable") for q in sample + field]
                    + [observation(q.id, "uncovered") for q in regs] + [observation("ood-1", "ood")])
    kept, name = _calibration_part(observations, CALIBRATION_SETS, [tmp_path / "cail2019-dev"], 400)
    assert {o.query_id for o in kept} == {q.id for q in field + regs} | {"ood-1"}
    assert name == "field-fit + regs-fit + cail2019-dev [0:400]"


def test_no_held_out_part_is_fitted_on():
    assert all(not s.endswith(":heldout") for s in FIT_SETS)
    assert set(CALIBRATION_SETS) <= set(FIT_SETS)
    fit_ids = {q.id for spec in FIT_SETS if ":" in spec
               for q in load_beir(ROOT / spec.split(":")[0], part=spec.split(":")[1]).queries}
    held_ids = {q.id for spec in HELD_OUT_SETS for q in load_beir(ROOT / spec.split(":")[0], part=spec.split(":")[1]).queries}
    assert fit_ids and held_ids and not fit_ids & held_ids
