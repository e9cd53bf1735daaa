"""Generation against a real local HTTP server standing in for an OpenAI-compatible endpoint."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rag.answer import Answer, Source
from rag.generate import Generator, GeneratorConfig

ANSWER = Answer("使用跟刀架支撑[1]", [Source(1, "standard_question", "sq-m-1", "细长轴车削振动", "使用跟刀架……")])


@pytest.fixture
def stub():
    state = {"reply": "", "delay": 0.0, "requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append((self.path, self.headers.get("Authorization"), body))
            time.sleep(state["delay"])
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": state["reply"]}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_generated_answer_keeps_citations_and_sends_only_the_sources(stub):
    state, url = stub
    state["reply"] = "应加装跟刀架，支撑爪间隙不大于0.02mm[1]。"
    out = Generator(GeneratorConfig(url, "local-model", "secret", timeout=5)).rewrite("细长轴振动怎么办", ANSWER)
    assert out.generated and out.text == state["reply"] and out.sources == ANSWER.sources
    path, auth, body = state["requests"][0]
    assert path == "/v1/chat/completions" and auth == "Bearer secret" and body["model"] == "local-model"
    assert "[1] 细长轴车削振动" in body["messages"][1]["content"]


def test_citation_to_an_unknown_source_falls_back_to_extractive(stub):
    state, url = stub
    state["reply"] = "换用陶瓷刀具[2]。"
    assert Generator(GeneratorConfig(url, "m", timeout=5)).rewrite("q", ANSWER) == ANSWER


def test_timeout_falls_back_to_extractive(stub):
    state, url = stub
    state["reply"], state["delay"] = "迟到的回答[1]", 2.0
    started = time.monotonic()
    assert Generator(GeneratorConfig(url, "m", timeout=0.3)).rewrite("q", ANSWER) == ANSWER
    assert time.monotonic() - started < 1.9


def test_unreachable_endpoint_falls_back_to_extractive():
    assert Generator(GeneratorConfig("http://127.0.0.1:9/v1", "m", timeout=1)).rewrite("q", ANSWER) == ANSWER


def test_engine_uses_the_endpoint_for_composed_answers_but_not_standard_ones(stub, mini_corpus, tmp_path, embedder, cache):
    from indexer.build import build_index
    from indexer.version import LiveIndex
    from rag.db import connect
    from rag.engine import Engine, EngineConfig
    from rag.escalate import TicketQueue

    state, url = stub
    state["reply"] = "加装跟刀架并采用反向进给[1]。"
    build_index(mini_corpus, tmp_path / "index", embedder, cache)
    config = EngineConfig(mini_corpus, tmp_path / "index", threshold=0.0, generator=GeneratorConfig(url, "m", timeout=5))
    engine = Engine(LiveIndex(tmp_path / "index", embedder), TicketQueue(connect(f"sqlite:///{tmp_path}/q.db")), config, cache)
    composed = engine.ask("车细长轴直线度老超差", "ent").to_dict()
    assert composed["generated"] and composed["answer"] == state["reply"]
    standard = engine.ask("带式输送机跑偏怎么调整", "ent").to_dict()
    assert standard["standard"] and not standard["generated"]
