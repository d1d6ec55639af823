# The README's two commands are `make run` and `make test`; both set up .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Azurite (the Azure Storage emulator) backs the Tables store tests; pinned, installed from npm.
AZURITE_VERSION := 3.35.0
AZURITE := .tools/node_modules/.bin/azurite-table
# The browser tests drive Debian's chromium (Playwright never downloads a browser here).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint format clean tools bench

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	@touch $(STAMP)

$(AZURITE):
	@command -v npm >/dev/null || { echo "npm is needed to install Azurite (apt install nodejs npm)"; exit 1; }
	npm install --prefix .tools --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "the browser tests need Debian's chromium at $(CHROMIUM)"; exit 1; }
	$(SUDO) apt-get install -y -q chromium >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium >/dev/null; }

tools: $(STAMP) $(AZURITE) $(CHROMIUM)

run: $(STAMP)
	$(BIN)/python -m devhost

test: tools lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .


clean:
	rm -rf $(VENV) .tools .local .pytest_cache .mypy_cache .ruff_cache
