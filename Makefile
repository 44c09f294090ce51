# The two commands a fresh machine needs: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 30000
HOST ?= 127.0.0.1
SGLANG_FRONTEND := 0.5.23

.PHONY: install serve test test-slow lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# SGLang's frontend language for the tests that run its programs against the server;
	# --no-deps: the rest of the package is SGLang's own GPU runtime (torch CUDA, triton).
	$(PY) -m pip install -q --no-deps sglang==$(SGLANG_FRONTEND)
	touch $@

install: $(VENV)/.installed

model: install
	$(PY) -m tools.fetch_model

serve: model
	$(PY) -m jaxengine.serve --host $(HOST) --port $(PORT) $(ARGS)

test: model
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: model
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: model
	$(PY) -m benchmarks.bench_offline

clean:
	rm -rf $(VENV)
