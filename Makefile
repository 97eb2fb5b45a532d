# Single entry point. Every target installs what it needs into .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/dev.lock

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck unit bench lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): $(LOCK) pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv/ from the lock file

run: $(STAMP) ## start the local stack on http://127.0.0.1:$${PORT:-8000}
	$(BIN)/energy-auction local

test: $(STAMP) lint typecheck ## lint, type-check and run every test
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP) ## benchmarks -> benchmarks/report.json
	$(BIN)/python -m benchmarks.run --out benchmarks/report.json

lock: ## re-resolve the lock file after changing pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu -o $(LOCK) --quiet

clean: ## remove the virtualenv and caches (keeps the local stack's data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
