"""Patent-like records for scale runs, built from real Chinese scientific text (../shared/eval/csl).

``python -m eval.patents_gen --count 1000000 --out /tmp/patents.jsonl``

Each record takes a csl paper's title (its query of type ``title``, when there is one) and abstract: the abstract
is the patent's abstract, its sentences become claims (claim 1 independent, the rest dependent on it), keywords
come from the paper's keywords; numbers, IPC codes, applicants, inventors, dates and legal status are drawn
deterministically (seeded) in the real formats, so every record validates as a ``Patent``. Beyond the 12k papers
the papers are reused with their claims in another order.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from indexer.chunking import split_sentences
from indexer.records import Patent, record_to_json

SHARED = Path(__file__).resolve().parents[2] / "shared" / "eval"
TRADES = ["机加工", "数控机床", "焊接", "电气维修", "设备维护", "矿山设备", "化工工艺", "质量检测", "轨道车辆", "安全生产"]
IPC = ["B23B 25/00", "B23K 9/32", "G05B 19/418", "H02P 29/024", "F16N 7/38", "E21D 23/16", "B01J 19/00",
       "G01N 21/88", "B61F 5/24", "A62B 35/00", "G06F 30/20", "G06N 3/08", "H02J 3/38", "F16C 19/52"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚"
ORGS = ["重工机械有限公司", "智能装备股份有限公司", "机床厂", "理工大学", "矿山机械集团有限公司", "轨道交通装备有限公司",
        "化工设计研究院", "检测技术有限公司"]
PREFIXES = ["一种", "一种基于", "一种改进的"]


def papers(shared: Path) -> list[tuple[str, str, list[str]]]:
    """(title, abstract, keywords) of every csl paper that has a title."""
    titles, keywords = {}, {}
    for line in open(shared / "csl" / "queries.jsonl", encoding="utf-8"):
        q = json.loads(line)
        key = q["_id"][1:]
        (titles if q.get("type") == "title" else keywords)[key] = q["text"]
    out = []
    for line in open(shared / "csl" / "corpus.jsonl", encoding="utf-8"):
        doc = json.loads(line)
        if doc["_id"] in titles:
            out.append((titles[doc["_id"]], doc["text"], keywords.get(doc["_id"], "").split()))
    return out


def patent(n: int, title: str, abstract: str, keywords: list[str], rng: random.Random, reused: bool) -> Patent:
    sentences = [s for s in split_sentences(abstract) if len(s) >= 8] or [abstract]
    if reused:  # a paper used again: its claims in another order
        rng.shuffle(sentences)
    subject = title if title.startswith("一种") else rng.choice(PREFIXES) + title
    claims = [f"1.{subject}，其特征在于，{sentences[0]}"]
    claims += [f"{i}.根据权利要求1所述的{subject[2:12]}，其特征在于，{s}" for i, s in enumerate(sentences[1:5], start=2)]
    year = rng.randint(2010, 2024)
    kind = rng.choice("12")
    serial = rng.randint(0, 9_999_999)
    applied = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    published = f"{year + 1}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    code = "A" if kind == "1" else "U"
    return Patent.model_validate({
        "id": f"pt-gen-{n}", "application_number": f"{year}{kind}{serial:07d}.{rng.choice('0123456789X')}",
        "publication_number": f"CN{rng.randint(100_000_000, 999_999_999)}{code}", "title": subject,
        "abstract": abstract, "claims": claims, "ipc": rng.sample(IPC, 2),
        "applicants": [rng.choice(SURNAMES) + rng.choice(SURNAMES) + rng.choice(ORGS)],
        "inventors": [rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN) for _ in range(rng.randint(1, 4))],
        "application_date": applied, "publication_date": published,
        "legal_status": "授权" if code == "U" else rng.choice(["实质审查", "公开", "授权"]),
        "trade": rng.choice(TRADES), "keywords": keywords[:6]})


def generate(count: int, shared: Path = SHARED, seed: int = 5):
    """``count`` patents, deterministic for a seed."""
    rng = random.Random(seed)
    source = papers(shared)
    for n in range(count):
        title, abstract, keywords = source[n % len(source)]
        yield patent(n, title, abstract, keywords, rng, reused=n >= len(source))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shared", type=Path, default=SHARED)
    args = parser.parse_args()
    with open(args.out, "w", encoding="utf-8") as handle:
        for n, record in enumerate(generate(args.count, args.shared)):
            handle.write(json.dumps(record_to_json(record), ensure_ascii=False) + "\n")
    print(f"wrote {n + 1} patents to {args.out}")


if __name__ == "__main__":
    main()
