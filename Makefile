# Two commands are all the set-up there is: `make run` and `make test` create the virtualenv and
# install the project with its dev dependencies on first use (and again when pyproject changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run emulator test lint bench fuzz clean vendor

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/liveproxy serve --example-tools

emulator: $(STAMP)
	$(BIN)/liveproxy emulator

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check liveproxy tests bench
	$(BIN)/ruff format --check liveproxy tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Hunt for crashes: generated hostile input against a real server for FUZZ_SECONDS (default 600),
# shared by the lanes run (FUZZ_ARGS='-k "native or budget"' picks some).
fuzz: $(STAMP)
	FUZZ_SECONDS=$${FUZZ_SECONDS:-600} $(BIN)/python -m pytest tests/fuzz -p no:cacheprovider -s $(FUZZ_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/store_cost.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Rebuild the demo's copy of Google's JS SDK (liveproxy/static/vendor/genai.mjs and its licenses)
# from vendor/package-lock.json; needs npm. Nothing else does: the bundle is committed.
vendor:
	cd vendor && npm ci --no-audit --no-fund && node build.mjs
