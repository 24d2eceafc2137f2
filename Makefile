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

# the paper's backbones (timm, open_clip, transformers) need a torchvision that matches torch:
# a second environment with the pair these machines carry locally (a CUDA build; runs on CPU)
BACKBONE_VENV ?= .venv-backbones
BACKBONE_TORCH ?= torch==2.14.1 torchvision==0.29.1
BACKBONE_LIBS ?= timm==1.0.31 open_clip_torch==3.3.0 transformers==5.25.0
BACKBONE_STAMP := $(BACKBONE_VENV)/.hierloc-installed

.PHONY: demo test install clean ort-web test-backbones

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
	$(BIN)/ruff check src tests scripts backbone_tests
	$(BIN)/ruff format --check src tests scripts backbone_tests
	$(BIN)/python scripts/check_imports.py
	HIERLOC_ONNXRUNTIME_WEB=$${HIERLOC_ONNXRUNTIME_WEB:-$(CURDIR)/$(ORT_WEB)} \
		$(BIN)/python -m pytest -n auto --dist loadfile

test-backbones: $(BACKBONE_STAMP)
	$(BACKBONE_VENV)/bin/python -m pytest -p no:cacheprovider backbone_tests

$(BACKBONE_STAMP): pyproject.toml
	@test -x $(BACKBONE_VENV)/bin/python || $(PYTHON) -m venv $(BACKBONE_VENV)
	$(BACKBONE_VENV)/bin/python -m pip install -q $(BACKBONE_TORCH)
	$(BACKBONE_VENV)/bin/python -m pip install -q $(BACKBONE_LIBS) pytest -e .
	$(BACKBONE_VENV)/bin/python -m pip install -q --no-deps "geoclip==1.3.0"
	@touch $@

ort-web: $(ORT_WEB)/ort.wasm.min.js

$(ORT_WEB)/ort.wasm.min.js:
	npm install --prefix .cache/onnxruntime-web --no-audit --no-fund --silent "$(ORT_WEB_SPEC)"

clean:
	rm -rf $(VENV) $(BACKBONE_VENV) .pytest_cache .ruff_cache .hypothesis .cache
