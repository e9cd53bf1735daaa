"""The built wheel is complete: installed into a fresh virtualenv, away from the source tree, it indexes the
sample corpus, answers a standard question with the shipped ranker and calibration, and serves both pages.

Dependencies come from the development virtualenv's site-packages, added as a plain path: its ``.pth``
files (among them the editable install's finder, which maps to the source tree) are not processed, so
``jiangxin`` itself can only come from the wheel; the test checks that it does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx
import pytest

from api.settings import Settings
from tests.api.conftest import free_port, wait_until_serving
from tests.conftest import ROOT

pytestmark = pytest.mark.install
SOURCES = ("pyproject.toml", "setup.py", "README.md", "indexer", "rag", "api", "eval")


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh virtualenv with the wheel installed, and the environment to run it in (cwd: a temporary folder)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:  # a copy, so the build's build/ and egg-info never touch the shared tree
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "reports", "*.so"))
        else:
            shutil.copy2(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", source, "-w", root / "dist", cwd=root)
    wheel = next((root / "dist").glob("jiangxin-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"rag/models/{p.name}" for p in (source / "rag" / "models").iterdir()} | \
              {f"api/pages/{p.name}" for p in (source / "api" / "pages").iterdir()} | {"indexer/native/LICENSE"}
    assert shipped - names == set(), "the wheel lacks package data"
    assert any(n.startswith("indexer/_e5query") and n.endswith(".so") for n in names), "the wheel lacks the query engine"
    modules = {p.relative_to(source).as_posix() for name in SOURCES[3:] for p in (source / name).rglob("*.py")
               if (p.parent / "__init__.py").exists()}
    assert modules - names == set(), "the wheel lacks modules"

    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps", "--no-index", wheel, cwd=root)
    target = Path(run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root).strip())
    (target / "dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")

    work = root / "work"
    shutil.copytree(ROOT / "corpus", work / "corpus")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JIANGXIN_", "PYTHON"))}
    env |= {"JIANGXIN_CACHE_PATH": os.environ.get("JIANGXIN_CACHE_PATH", str(Settings().cache_path)),  # warm if it exists
            "JIANGXIN_DATABASE_URL": f"sqlite:///{work / 'jiangxin.db'}", "JIANGXIN_INDEX_DIR": str(work / "index"),
            "JIANGXIN_CORPUS_DIR": str(work / "corpus"), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    return venv, env


def test_the_package_comes_from_the_wheel_not_the_source_tree(installed):
    venv, env = installed
    probe = "import json, sys, api, rag, indexer; print(json.dumps([api.__file__, rag.__file__, indexer.__file__, [repr(f) for f in sys.meta_path]]))"
    *files, finders = json.loads(run(venv / "bin" / "python", "-c", probe, cwd=Path(env["JIANGXIN_INDEX_DIR"]).parent, env=env))
    assert all(f.startswith(str(venv)) for f in files), files
    assert not any("editable" in f.lower() for f in finders)


def test_the_installed_command_indexes_answers_and_serves_the_pages(installed):
    venv, env = installed
    work = Path(env["JIANGXIN_INDEX_DIR"]).parent
    jiangxin = venv / "bin" / "jiangxin"
    run(jiangxin, "index", cwd=work, env=env)

    shipped = json.loads((ROOT / "rag" / "models" / "calibration.json").read_text(encoding="utf-8"))
    ranker = json.loads((ROOT / "rag" / "models" / "ranker.json").read_text(encoding="utf-8"))
    loaded = json.loads(run(venv / "bin" / "python", "-c", (
        "import json; from api.settings import Settings; from api.wiring import make_engine; e = make_engine(Settings()); "
        "print(json.dumps({'threshold': e.threshold, 'fitted_on': e.calibrator.fitted_on, 'weights': e.ranker_weights.weights}))"),
        cwd=work, env=env))
    assert not loaded["fitted_on"].startswith("uncalibrated")
    assert loaded["threshold"] == shipped["threshold"] and loaded["weights"] == ranker["weights"]

    sq = json.loads((work / "corpus" / "standard_questions.jsonl").read_text(encoding="utf-8").splitlines()[0])
    answer = json.loads(run(jiangxin, "ask", sq["question"], "--json", cwd=work, env=env))
    assert answer["status"] == "answered" and answer["standard"] and answer["answer"] == sq["answer"]

    port = free_port()
    with open(work / "serve.log", "w") as log:
        server = subprocess.Popen([str(jiangxin), "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=work, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/readyz", server, work / "serve.log", seconds=60)
        for page in ("/", "/queue"):
            r = httpx.get(f"http://127.0.0.1:{port}{page}", timeout=10)
            assert r.status_code == 200 and "<html" in r.text.lower(), page
    finally:
        server.terminate()
        server.wait(timeout=30)
