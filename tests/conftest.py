"""Shared fixtures: real corpora copied to temporary folders, real indexes built with the real embedder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from indexer.build import BuildOptions, build_index
from indexer.embedders import EmbedderSpec, EmbeddingCache, load_embedder

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "tests" / "data" / "mini"


@pytest.fixture(scope="session")
def embedder():
    return load_embedder(EmbedderSpec())


@pytest.fixture(scope="session")
def cache_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache") / "embeddings.sqlite3"


@pytest.fixture(scope="session")
def cache(cache_path):
    return EmbeddingCache(cache_path)


@pytest.fixture
def mini_corpus(tmp_path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(MINI, target)
    return target


@pytest.fixture(scope="session")
def mini_index(tmp_path_factory, embedder, cache) -> Path:
    """A real index of the mini corpus, built once per session; tests must not modify it."""
    folder = tmp_path_factory.mktemp("mini_index")
    build_index(MINI, folder, embedder, cache, BuildOptions())
    return folder


@pytest.fixture
def cli_env(cache_path) -> dict[str, str]:
    env = dict(os.environ)
    env["JIANGXIN_CACHE_PATH"] = str(cache_path)
    return env
