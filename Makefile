# Single entry point. Every target installs what it needs into .venv/ first, from lock files that
# pin every package with hashes (make lock writes them all):
#   requirements/bootstrap.lock  uv, the installer; pip installs it into .venv/
#   requirements/local.lock      what the local stack needs (make run)
#   requirements/dev.lock        all of that, plus CDK and the test and lint tools (make test)
# local.lock and bootstrap.lock are resolved with dev.lock as constraints (and make check-locks
# checks it), so a package has the same version in every lock: switching between make run and
# make test in one .venv/ only ever adds packages, never changes one.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
# Compiled at install: this machine sets PYTHONDONTWRITEBYTECODE, so Python never caches what it
# compiles on import, and every process (each CLI command, each test that starts one) would
# compile its imports again.
UV_INSTALL := $(UV) pip install --python $(BIN)/python --compile-bytecode
BOOTSTRAP_LOCK := requirements/bootstrap.lock
LOCAL_LOCK := requirements/local.lock
LOCK := requirements/dev.lock
LAMBDA_LOCK := requirements/lambda.lock
UV_STAMP := $(VENV)/.installed-uv
RUN_STAMP := $(VENV)/.installed-local
STAMP := $(VENV)/.installed-dev
# Where the resolver targets: the machines make run and make test run on.
HOST_PLATFORM := --python-version 3.11 --python-platform x86_64-unknown-linux-gnu
COMPILE := $(UV) pip compile --generate-hashes --quiet --custom-compile-command "make lock"
# Arguments for the local stack, e.g. make run ARGS=--no-schedule or ARGS='--every 30s'.
ARGS ?=
# Deployment (infra/): the CDK CLI pinned in package-lock.json; the app itself is Python.
STAGE ?= dev
REGION ?=
NODE_STAMP := node_modules/.installed
CDK := JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 CDK_DISABLE_CLI_TELEMETRY=true \
	node_modules/.bin/cdk --no-notices -c stage=$(STAGE) $(if $(REGION),-c region=$(REGION))

.DEFAULT_GOAL := help
.PHONY: help install run test unit lint typecheck check-locks openapi bench bench-first-run lock clean bundle \
	synth deploy deploy-pipeline destroy

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' \
		'{ name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1) } \
		END { for (i = 1; i <= NR; i++) printf "  make %-" width "s  %s\n", name[i], text[i] }'

# The venv is created without pip (ensurepip alone takes ~8 s): the pip of $(PYTHON) installs uv
# into it (pip >= 22.3 has --python); only when that pip is missing is the venv given its own.
# dev.lock brings a pinned pip for the tools that need one (infra/bundling.py).
$(UV_STAMP): $(BOOTSTRAP_LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(BIN)/python || { echo "==> creating $(VENV)/ with $$($(PYTHON) --version)"; \
		$(PYTHON) -m venv --without-pip $(VENV); }
	@echo "==> installing uv, the installer, from $(BOOTSTRAP_LOCK) (pip, hash-checked)"
	@if $(BIN)/python -m pip --version >/dev/null 2>&1; then pip="$(BIN)/python -m pip"; \
	elif $(PYTHON) -m pip --python $(BIN)/python --version >/dev/null 2>&1; then \
		pip="$(PYTHON) -m pip --python $(BIN)/python"; \
	else $(BIN)/python -m ensurepip --default-pip >/dev/null && pip="$(BIN)/python -m pip"; fi; \
	$$pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r $(BOOTSTRAP_LOCK)
	@touch $@

$(RUN_STAMP): $(UV_STAMP) $(LOCAL_LOCK) pyproject.toml
	@echo "==> installing what the local stack needs from $(LOCAL_LOCK) (hash-checked)"
	@$(UV_INSTALL) --require-hashes -r $(LOCAL_LOCK)
	@echo "==> installing energy-auction from this folder (editable)"
	@$(UV_INSTALL) --quiet --no-deps --no-build-isolation -e .
	@touch $@

$(STAMP): $(UV_STAMP) $(LOCK) $(LOCAL_LOCK) pyproject.toml
	@echo "==> installing the development toolchain from $(LOCK) (hash-checked)"
	@$(UV_INSTALL) --require-hashes -r $(LOCK)
	@echo "==> installing energy-auction from this folder (editable)"
	@$(UV_INSTALL) --quiet --no-deps --no-build-isolation -e .
	@# dev.lock holds every package of local.lock at the same version: make run has nothing to add.
	@touch $@ $(RUN_STAMP)

install: $(STAMP) ## create .venv/ with everything (make run alone installs only the local stack)

run: $(RUN_STAMP) ## start the local stack on http://127.0.0.1:8000 (or PORT=...; local options in ARGS=...)
	$(BIN)/energy-auction local $(ARGS)

test: $(STAMP) check-locks lint typecheck ## check the locks, lint, type-check and run every test
	$(BIN)/pytest

unit: $(STAMP) ## the unit and handler tests only: the fast inner loop
	$(BIN)/pytest tests/unit tests/handlers

lint: $(STAMP) ## ruff: lint and format check
	$(BIN)/ruff check src tests benchmarks infra
	$(BIN)/ruff format --check src tests benchmarks infra

typecheck: $(STAMP) ## mypy (strict) on the package, infra/ and tests/
	$(BIN)/mypy
	$(BIN)/mypy infra
	$(BIN)/mypy tests

check-locks: ## check that local.lock and bootstrap.lock pin the versions dev.lock pins
	@awk '/^[A-Za-z0-9]/ { split($$1, pin, "=="); name = tolower(pin[1]) } \
		/^[A-Za-z0-9]/ && FILENAME == "$(LOCK)" { dev[name] = pin[2]; next } \
		/^[A-Za-z0-9]/ && dev[name] != pin[2] { \
			printf "%s pins %s, %s pins %s\n", FILENAME, $$1, "$(LOCK)", dev[name] ? name "==" dev[name] : "nothing"; bad = 1 } \
		END { if (bad) { print "run make lock"; exit 1 } }' $(LOCK) $(LOCAL_LOCK) $(BOOTSTRAP_LOCK)

openapi: $(RUN_STAMP) ## regenerate docs/openapi.json from the route table and the models (a test fails when it is stale)
	$(BIN)/python -m energy_auction.openapi --out docs/openapi.json

bench: $(STAMP) ## benchmarks -> benchmarks/report.json (ONLY=pipeline: one section again, the rest kept)
	$(BIN)/python -m benchmarks.run --out benchmarks/report.json $(foreach section,$(ONLY),--only $(section))

# Not part of make bench: it clones and installs from scratch, twice (about 3 minutes).
# BENCH_ARGS='--repeat 3' or '--cache warm' (see benchmarks/first_run.py --help).
bench-first-run: ## fresh clone to GET /health, the old full install vs make run -> build/first-run.json
	$(PYTHON) benchmarks/first_run.py --out build/first-run.json $(BENCH_ARGS)

lock: $(UV_STAMP) ## re-resolve every lock file after changing pyproject.toml
	@echo "==> $(LOCK): the package with its dev extra (local, infra, test and lint tools)"
	@$(COMPILE) pyproject.toml --extra dev $(HOST_PLATFORM) -o $(LOCK)
	@echo "==> $(LOCAL_LOCK): the package with its local extra, at $(LOCK)'s versions"
	@$(COMPILE) pyproject.toml requirements/local.in --extra local --constraint $(LOCK) $(HOST_PLATFORM) \
		-o $(LOCAL_LOCK)
	@echo "==> $(BOOTSTRAP_LOCK): uv, at $(LOCK)'s version"
	@$(COMPILE) requirements/bootstrap.in --constraint $(LOCK) $(HOST_PLATFORM) -o $(BOOTSTRAP_LOCK)
	@echo "==> $(LAMBDA_LOCK): the Lambda layer (Python 3.13, arm64)"
	@$(COMPILE) pyproject.toml --python-version 3.13 --python-platform aarch64-manylinux2014 -o $(LAMBDA_LOCK)
	@$(MAKE) --no-print-directory check-locks

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
