# Quick start:  make try   (set up a virtualenv and open the local Slack simulation on http://127.0.0.1:3000/)
#               make test  (set up a virtualenv, install the test browser if missing, run the whole test suite)
#               make run   (run the bot against a real Slack workspace: see README.md, "Set up Slack")
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

TRY_PORT ?= $(or $(PORT),3000)

.PHONY: try run test lint bench clean screenshots lock lambda-package FORCE

APP    := $(VENV)/.installed-app

# Which interpreter the virtualenv is made from: checked on every run (Python >= 3.11, able to make a
# virtualenv; one made by another interpreter is removed), rewritten only when it changes, so that a change
# rebuilds the virtualenv below.
$(VENV)/.interpreter: FORCE
	@$(PYTHON) scripts/check-python $(VENV)

# The bot alone (enough for `make try` and `make run`), then the development tools on top (tests, lint).
$(APP): pyproject.toml requirements.lock $(VENV)/.interpreter
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(APP)

$(STAMP): $(APP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

try: $(APP)
	$(BIN)/breakglass-bot try --port $(TRY_PORT) $(if $(POLICY),--policy $(POLICY))

run: $(APP)
	$(BIN)/breakglass-bot

test: $(STAMP)
	sh scripts/install-browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n auto -q

# The README's screenshots (docs/screenshots/*.png), taken by the browser tests.
screenshots: $(STAMP)
	sh scripts/install-browser
	BREAKGLASS_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q -m browser tests/test_try_browser.py

# requirements.lock: the runtime dependencies of pyproject.toml, pinned with their hashes (all platforms),
# used by `make`, the Dockerfile and `sam build`; tests/test_lock.py checks it still matches pyproject.toml.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
	  --no-emit-find-links --output-file requirements.lock pyproject.toml

# dist/breakglass-lambda.zip, the deployment package of deploy/terraform (Lambda python3.12 on arm64): the
# locked dependencies as manylinux aarch64 wheels (every hash checked), bot/ and store/, and the policy file
# `POLICY` (optional) at the same relative path, which is the module's `policy_file`.
LAMBDA_BUILD := build/lambda
LAMBDA_PYTHON ?= python3.12
lambda-package: $(APP)
	rm -rf $(LAMBDA_BUILD) dist/breakglass-lambda.zip
	mkdir -p $(LAMBDA_BUILD) dist
	$(BIN)/python -m pip install --quiet --require-hashes --only-binary=:all: --platform manylinux2014_aarch64 \
	  --implementation cp --python-version 3.12 --target $(LAMBDA_BUILD) -r requirements.lock
	cp -R bot store $(LAMBDA_BUILD)/
	$(if $(POLICY),mkdir -p $(LAMBDA_BUILD)/$(dir $(POLICY)) && cp $(POLICY) $(LAMBDA_BUILD)/$(POLICY))
	find $(LAMBDA_BUILD) -name __pycache__ -prune -exec rm -rf {} +
	@# Lambda's code is read-only, so Python cannot cache bytecode there: without .pyc files in the package
	@# every cold start compiles each module from source (docs/benchmarks.md 7c). Compiled by the runtime's
	@# Python (bytecode is per minor version, not per architecture); "unchecked-hash" because the zip does
	@# not keep the exact mtimes a timestamp check compares.
	@if command -v $(LAMBDA_PYTHON) >/dev/null 2>&1 && $(LAMBDA_PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 12)'; then \
	  $(LAMBDA_PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash $(LAMBDA_BUILD) >/dev/null; \
	else echo "warning: no Python 3.12 ($(LAMBDA_PYTHON)): the package has no .pyc files, so each cold start compiles every module"; fi
	cd $(LAMBDA_BUILD) && $(abspath $(BIN))/python -m zipfile -c $(abspath dist)/breakglass-lambda.zip *
	@echo "dist/breakglass-lambda.zip: the module's package_file"

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
