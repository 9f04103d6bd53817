# dogbreed: build the images, train and serve locally, test.
#   make demo                       # build, train on a generated sample, serve, predict
#   make test                       # the whole test suite (what CI runs)
#   make build                      # dogbreed-train:latest and dogbreed-serve:latest
#   make train-local DATA=dir [HP="epochs=3 arch=resnet18"] [PRETRAINED=file.pth]
#   make serve                      # serve the last train-local model on :8080

SHELL := /bin/bash
.DEFAULT_GOAL := help

# An empty BASE_IMAGE picks the public python:3.11-slim-bookworm when it can be had,
# else builds an equivalent from Debian's archive (see scripts/resolve_base_image.sh).
BASE_IMAGE ?=
LOCAL_BASE_IMAGE ?= dogbreed-base:bookworm
# Extra CA certificates for the build (TLS-intercepting proxies), passed as a BuildKit
# secret: the system bundle where there is one, else an empty file.
CA_BUNDLE ?= $(firstword $(wildcard /etc/ssl/certs/ca-certificates.crt) docker/no-extra-ca.pem)
OPT_ML ?= build/opt_ml
DATA ?=
HP ?=
PRETRAINED ?=
VENV ?= .venv
PYTEST_ARGS ?=

COMPOSE := CA_BUNDLE=$(CA_BUNDLE) OPT_ML=$(abspath $(OPT_ML)) docker compose
PY := $(VENV)/bin/python

.PHONY: help base-image build build-train build-serve train-local serve demo sample venv test test-unit lint lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

base-image:  ## build the local Debian stand-in for python:3.11-slim-bookworm
	scripts/make_base_image.sh $(LOCAL_BASE_IMAGE)

build:  ## build dogbreed-train:latest and dogbreed-serve:latest (linux/amd64)
	base=$$(scripts/resolve_base_image.sh "$(BASE_IMAGE)" "$(LOCAL_BASE_IMAGE)") && BASE_IMAGE=$$base \
	  $(COMPOSE) --profile train build train serve

build-train:  ## build only the training image
	base=$$(scripts/resolve_base_image.sh "$(BASE_IMAGE)" "$(LOCAL_BASE_IMAGE)") && BASE_IMAGE=$$base \
	  $(COMPOSE) --profile train build train

build-serve:  ## build only the serving image
	base=$$(scripts/resolve_base_image.sh "$(BASE_IMAGE)" "$(LOCAL_BASE_IMAGE)") && BASE_IMAGE=$$base \
	  $(COMPOSE) build serve

train-local:  ## train in the container on DATA (a dogImages-style folder) over $(OPT_ML)
	@test -n "$(DATA)" || { echo "usage: make train-local DATA=path/to/dogImages [HP='epochs=3 arch=resnet18'] [PRETRAINED=weights.pth]" >&2; exit 2; }
	PYTHONPATH=code python3 -m dogbreed.tools.opt_ml "$(DATA)" "$(OPT_ML)" $(foreach h,$(HP),--hp $(h)) \
	  $(if $(PRETRAINED),--pretrained "$(PRETRAINED)") $(if $(RESUME),--resume)
	$(COMPOSE) --profile train run --rm train
	@echo "model: $(OPT_ML)/model   report: $(OPT_ML)/output/data/report.html"

serve:  ## serve the model of the last train-local run on localhost:8080
	$(COMPOSE) up serve

SAMPLE ?= build/sample
sample:  ## generate the demo data set into $(SAMPLE) (runs in the training image: needs Pillow)
	mkdir -p $(dir $(abspath $(SAMPLE)))
	docker run --rm --user $$(id -u):$$(id -g) -v $(dir $(abspath $(SAMPLE))):/out dogbreed-train:latest \
	  python -m dogbreed.tools.sample /out/$(notdir $(abspath $(SAMPLE))) --per-class 100

demo:  ## the whole product on a fresh machine: build, train, serve, predict
	scripts/demo.sh

venv: $(VENV)/.installed  ## the host environment for tests (requirements-dev.lock)
$(VENV)/.installed: requirements-dev.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# tests/launcher runs in its own venv (see test-launcher below).
test: venv build  ## the whole test suite: lint, launcher, unit and container tests (what CI runs)
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory test-launcher
	$(PY) -m pytest --ignore=tests/launcher $(PYTEST_ARGS)

test-unit: venv  ## unit tests only (no Docker)
	$(PY) -m pytest --ignore=tests/launcher -m "not docker" $(PYTEST_ARGS)

lint: venv  ## ruff (lint and format check) and mypy on code/, configured in pyproject.toml
	$(PY) -m ruff check code
	$(PY) -m ruff format --check code
	$(PY) -m mypy

lock:  ## re-pin every *.lock from its .in file (needs uv: pip install uv)
	for f in docker/train/requirements docker/serve/requirements requirements-dev requirements-launcher; do \
	  omit=$$(test ! -f $$f.omit || sed 's/#.*//' $$f.omit | xargs -r printf -- '--no-emit-package %s '); \
	  UV_NATIVE_TLS=1 uv pip compile -q --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	    --generate-hashes --no-header --index-url https://pypi.org/simple $$omit $$f.in -o $$f.lock || exit 1; \
	done

clean:  ## remove build/ (local /opt/ml trees, samples)
	rm -rf build

# The SageMaker launcher (python -m dogbreed.launcher) has its own venv: the SDK 3.x
# needs a newer protobuf than smdebug (in .venv) allows.
LAUNCHER_VENV ?= .venv-launcher
LAUNCHER_PY := $(LAUNCHER_VENV)/bin/python

.PHONY: launcher-venv test-launcher push

launcher-venv: $(LAUNCHER_VENV)/.installed  ## the SageMaker launcher's environment (requirements-launcher.lock)
$(LAUNCHER_VENV)/.installed: requirements-launcher.lock pyproject.toml
	test -x $(LAUNCHER_PY) || python3 -m venv $(LAUNCHER_VENV)
	$(LAUNCHER_PY) -m pip install -q --require-hashes -r requirements-launcher.lock
	$(LAUNCHER_PY) -m pip install -q --no-deps -e .
	touch $@

test-launcher: launcher-venv venv  ## launcher tests: moto, a local registry, SageMaker local mode (needs make build)
	$(LAUNCHER_PY) -m pytest tests/launcher $(PYTEST_ARGS)

push:  ## build both images and push them to ECR (scripts/build_and_push.sh)
	scripts/build_and_push.sh
