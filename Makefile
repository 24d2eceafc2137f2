# Two entry points, each setting up .venv on first use:
#   make demo   install, then run `hierloc demo` (the whole pipeline on the offline benchmark)
#   make test   install, then lint (ruff) and run the test suite (pytest)
# TORCH_SPEC: the torch to install when the environment has none. The pinned CPU build is
# what these machines carry locally; a bare `torch` would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# onnxruntime-web for `hierloc export --web` and its browser test (npm, into .cache/)
ORT_WEB_SPEC ?= onnxruntime-web@1.31.1
ORT_WEB := .cache/onnxruntime-web/node_modules/onnxruntime-web/dist
BIN := $(VENV)/bin
STAMP := $(VENV)/.hierloc-installed

.PHONY: demo test install clean ort-web

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	@# GeoCLIP's photo locations for `hierloc data bluemarble`: read from the wheel, never
	@# imported; --no-deps because geoclip itself would pull a full transformers stack
	$(BIN)/python -m pip install -q --no-deps "geoclip==1.3.0"
	@touch $@

demo: $(STAMP)
	$(BIN)/hierloc demo

test: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/python scripts/check_imports.py
	HIERLOC_ONNXRUNTIME_WEB=$${HIERLOC_ONNXRUNTIME_WEB:-$(CURDIR)/$(ORT_WEB)} \
		$(BIN)/python -m pytest -n auto --dist loadfile

ort-web: $(ORT_WEB)/ort.wasm.min.js

$(ORT_WEB)/ort.wasm.min.js:
	npm install --prefix .cache/onnxruntime-web --no-audit --no-fund --silent "$(ORT_WEB_SPEC)"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .cache
