# The two quick-start commands: `make demo` and `make test`. Each creates .venv if missing,
# installs the pinned CPU build of torch first (a bare `torch` would pull a multi-GB CUDA build),
# then the package, then runs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test test-all setup lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/golfpack demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# everything, the checks marked slow included (torchrun, kill-and-resume, cross-process determinism, long fuzz)
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
