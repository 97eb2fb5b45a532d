# Single entry point. Every target installs what it needs into .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/dev.lock
LAMBDA_LOCK := requirements/lambda.lock
# Deployment (infra/): the CDK CLI pinned in package-lock.json; the app itself is Python.
STAGE ?= dev
REGION ?=
NODE_STAMP := node_modules/.installed
CDK := JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 CDK_DISABLE_CLI_TELEMETRY=true \
	node_modules/.bin/cdk --no-notices -c stage=$(STAGE) $(if $(REGION),-c region=$(REGION))

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck unit bench lock clean bundle synth deploy deploy-pipeline destroy

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
	$(BIN)/ruff check src tests benchmarks infra
	$(BIN)/ruff format --check src tests benchmarks infra

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy infra

bench: $(STAMP) ## benchmarks -> benchmarks/report.json
	$(BIN)/python -m benchmarks.run --out benchmarks/report.json

lock: ## re-resolve the lock files after changing pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu -o $(LOCK) --quiet
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.13 \
		--python-platform aarch64-manylinux2014 -o $(LAMBDA_LOCK) --quiet

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

bundle: $(STAMP) ## build the Lambda dependency layer (python3.13 arm64 wheels, cached by lock file)
	$(BIN)/python -m infra.bundling

synth: $(STAMP) $(NODE_STAMP) ## synthesize every stack into cdk.out/ (no AWS credentials or Docker)
	$(CDK) synth --quiet

deploy: $(STAMP) $(NODE_STAMP) ## deploy the application stack of STAGE (default dev) with your credentials
	$(CDK) deploy EnergyAuction-$(STAGE) --require-approval broadening

deploy-pipeline: $(STAMP) $(NODE_STAMP) ## deploy the delivery pipeline (it then deploys dev and prod)
	$(CDK) deploy EnergyAuction-Delivery --require-approval broadening

destroy: $(STAMP) $(NODE_STAMP) ## delete the stack of STAGE (default dev; prod is refused)
	$(BIN)/python -m infra.teardown empty-buckets $(STAGE)
	$(CDK) destroy EnergyAuction-$(STAGE) --force
	$(BIN)/python -m infra.teardown delete-secrets $(STAGE)

clean: ## remove the virtualenv and caches (keeps the local stack's data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache cdk.out node_modules build/lambda-layer
