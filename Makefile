PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench soak lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check charivo_fsm tests

typecheck: $(STAMP)
	$(BIN)/mypy --strict charivo_fsm

# -rs lists every skipped test with its reason (the browser test skips without
# chromium, chromium-driver, espeak-ng or sox: .ci/run installs them).
test: $(STAMP) lint typecheck
	$(BIN)/pytest -rs

demo: $(STAMP)
	$(BIN)/charivo-fsm demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks

soak: $(STAMP)
	$(BIN)/python -m soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
