# Two commands on a fresh machine: `make run` (install, index the bundled corpus, serve) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test index bench bench-api clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[st,distributed,test]'
	touch $(STAMP)

index: $(STAMP)
	$(BIN)/jiangxin index --corpus corpus --index index

run: index
	$(BIN)/jiangxin serve --host 127.0.0.1 --port 8000 --bootstrap

# The browser test drives Debian's chromium (never a downloaded browser); CJK fonts make pages legible.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-wqy-microhei >/dev/null; } \
	  || echo "chromium could not be installed: the browser test will be skipped"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m eval.bench

bench-api: index
	$(BIN)/python -m eval.bench_api --fresh --seconds 60 --concurrency 4

clean:
	rm -rf $(VENV) index
