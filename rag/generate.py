"""Optional generation: an OpenAI-compatible chat endpoint rewrites the extractive answer from the cited
sources only, keeping the citations. Off unless a base URL is configured; any failure, timeout or a
citation to a source that was not given falls back to the extractive answer."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

import httpx

from rag.answer import Answer

log = logging.getLogger(__name__)
SYSTEM = ("你是工业生产技术顾问。只根据用户给出的编号资料回答问题，不得加入资料以外的事实、数字或建议。"
          "每句话后用资料编号标注出处，如[1]、[2]。资料不足以回答时，只说“资料不足”。")
_CITATION = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class GeneratorConfig:
    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 20.0


class Generator:
    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config

    def rewrite(self, question: str, answer: Answer) -> Answer:
        """The answer rewritten by the model, or ``answer`` unchanged when generation cannot be trusted."""
        sources = "\n".join(f"[{s.n}] {s.title}：{s.snippet}" for s in answer.sources)
        messages = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"问题：{question}\n\n资料：\n{sources}\n\n摘录：\n{answer.text}"}]
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        try:
            response = httpx.post(self.config.base_url.rstrip("/") + "/chat/completions", headers=headers,
                                  json={"model": self.config.model, "messages": messages, "temperature": 0},
                                  timeout=self.config.timeout)
            response.raise_for_status()
            text = response.json()["choices"][0]["message"]["content"].strip()
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            log.warning("generation failed (%s); using the extractive answer", exc)
            return answer
        cited = {int(n) for n in _CITATION.findall(text)}
        allowed = {s.n for s in answer.sources}
        if not text or not cited or not cited <= allowed:
            log.warning("generated answer cites %s, sources are %s; using the extractive answer", sorted(cited), sorted(allowed))
            return answer
        return replace(answer, text=text, generated=True)
