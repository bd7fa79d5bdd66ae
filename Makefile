PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: test demo docs bench soak lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Everything `make test` needs (the dev extra: every extra, test tools, linters).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The demo needs only the package and its runtime dependencies.
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $(DEMO_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check charivo_fsm tests

typecheck: $(STAMP)
	$(BIN)/mypy --strict charivo_fsm

# -rs lists every skipped test with its reason (the browser test skips without
# chromium, chromium-driver, espeak-ng or sox: .ci/run installs them).
test: $(STAMP) lint typecheck docs
	$(BIN)/pytest -rs

# The documentation site (API reference from the docstrings, guides from docs/) into
# site/; --strict turns every warning (a broken reference or link) into a failure.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

demo: $(DEMO_STAMP)
	$(BIN)/charivo-fsm demo

# The benchmarks run in .venv-bench: the package plus workload g's floor (websockets)
# and peer (openai-agents), which are no dependencies of the package. a-f also run the
# charivo_fsm of commit 839d7a2 (git archive; --baseline REV or none), interleaved.
# BENCH_ARGS="--quick": everything small, writes nothing; "--quick --only g": workload g
# alone, small, in under a minute.
BENCH := .venv-bench
$(BENCH)/.installed: pyproject.toml benchmarks/requirements.txt
	$(PYTHON) -m venv $(BENCH)
	$(BENCH)/bin/pip install -q --upgrade pip
	$(BENCH)/bin/pip install -q -e . -r benchmarks/requirements.txt
	touch $@

bench: $(BENCH)/.installed
	$(BENCH)/bin/python -m benchmarks $(BENCH_ARGS)

soak: $(STAMP)
	$(BIN)/python -m soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis site
