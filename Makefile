# Quick start:  make try   (set up a virtualenv and open the local Slack simulation on http://127.0.0.1:3000/)
#               make test  (set up a virtualenv, install the test browser if missing, run the whole test suite)
#               make run   (run the bot against a real Slack workspace: see README.md, "Set up Slack")
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

TRY_PORT ?= $(or $(PORT),3000)

.PHONY: try run test lint bench clean screenshots FORCE

APP    := $(VENV)/.installed-app

# Which interpreter the virtualenv is made from: checked on every run (Python >= 3.11, able to make a
# virtualenv; one made by another interpreter is removed), rewritten only when it changes, so that a change
# rebuilds the virtualenv below.
$(VENV)/.interpreter: FORCE
	@$(PYTHON) scripts/check-python $(VENV)

# The bot alone (enough for `make try` and `make run`), then the development tools on top (tests, lint).
$(APP): pyproject.toml $(VENV)/.interpreter
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
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
	$(BIN)/python -m pytest -n auto -q

# The README's screenshots (docs/screenshots/*.png), taken by the browser tests.
screenshots: $(STAMP)
	sh scripts/install-browser
	BREAKGLASS_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q -m browser tests/test_try_browser.py

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
