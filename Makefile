# imagery — `make help` lists the targets. `make run` and `make test` install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { command -v $$p; break; }; done)
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
STAMP := $(VENV)/.synced
RUN := $(UV) run --frozen --no-sync
PROTO_OUT := libs/common/src
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup run test test-unit test-integration test-e2e test-deploy bench proto proto-check proto-breaking \
	lint fmt typecheck ts-check k8s-render images clean

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	@test -n "$(PYTHON)" || { echo "imagery needs Python >= 3.11 on PATH (python3.11, python3.12, ...)" >&2; exit 1; }
	@echo "installing uv $(UV_VERSION) into $(TOOLS)/ with $(PYTHON)"
	@$(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): $(UV) uv.lock pyproject.toml libs/common/pyproject.toml services/*/pyproject.toml deploy/local/pyproject.toml tools/admin/pyproject.toml
	$(UV) sync --frozen --all-packages --python $(PYTHON)
	@touch $@

setup: $(STAMP) ## Install uv and the locked dependencies into .tools/ and .venv/

run: $(STAMP) ## Start the local stack: Postgres, S3+SQS, CloudFront stand-in and the services (Ctrl-C stops it; KEEP_DATA=1 keeps the database)
	DEVSTACK_KEEP_DATA=$(KEEP_DATA) $(RUN) python -m imagery.devstack

test: $(STAMP) lint typecheck proto-check proto-breaking ts-check ## Everything: lint, types, stub drift, API compatibility, TypeScript generation, unit, integration and e2e tests
	$(RUN) pytest tests

test-unit: $(STAMP) ## Unit tests (no I/O)
	$(RUN) pytest tests/unit

test-integration: $(STAMP) ## Integration tests against real Postgres and the local S3/SQS endpoint
	$(RUN) pytest tests/integration

test-e2e: $(STAMP) ## End-to-end tests: the real service processes over sockets
	$(RUN) pytest tests/e2e

test-deploy: $(STAMP) ## Manifest, Dockerfile and production-install checks
	$(RUN) pytest tests/deploy

bench: $(STAMP) ## Benchmarks, printed as tables
	$(RUN) python -m bench

proto: $(STAMP) ## Regenerate Python stubs (+ .pyi) from protos/ into libs/common
	$(RUN) buf lint
	$(RUN) python -m grpc_tools.protoc -Iprotos -Ithird_party/googleapis \
		--python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		--mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) \
		protos/imagery/v1/*.proto

proto-check: $(STAMP) ## Fail when buf lint fails or checked-in stubs differ from protos/
	$(RUN) buf lint
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(RUN) python -m grpc_tools.protoc -Iprotos -Ithird_party/googleapis --python_out=$$tmp --grpc_python_out=$$tmp \
		--mypy_out=$$tmp --mypy_grpc_out=$$tmp protos/imagery/v1/*.proto && \
	for f in $$(cd $$tmp && find . -type f | sort); do \
		cmp -s "$$tmp/$$f" "$(PROTO_OUT)/$$f" || { echo "stub drift: $(PROTO_OUT)/$$f differs from protos/ (run make proto)" >&2; exit 1; }; \
	done; echo "proto-check: stubs match protos/"

ts-check: $(STAMP) ## Generate TypeScript with buf.gen.yaml (protoc-gen-es, Node from PyPI) and type-check it
	cd clients/typescript && ../../$(VENV)/bin/npm ci --no-audit --no-fund --loglevel=error
	$(RUN) python clients/typescript/check.py

proto-breaking: $(STAMP) ## Fail when protos/ breaks imagery.v1 as any commit had it (buf breaking)
	@revs=$$(git log --format=%H -- protos 2>/dev/null); \
	for rev in $$revs; do \
		$(RUN) buf breaking protos --against ".git#ref=$$rev,subdir=protos" || { echo "protos/ breaks imagery.v1 as commit $$rev published it: add fields and methods, never rename, renumber or remove them (a break needs imagery.v2)" >&2; exit 1; }; \
	done; echo "proto-breaking: protos/ is compatible with all $$(echo $$revs | wc -w) committed version(s)"

lint: $(STAMP) ## ruff lint and format check, and the layering contracts (lint-imports)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports --no-cache

fmt: $(STAMP) ## Format the code
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

typecheck: $(STAMP) ## mypy --strict on our code
	$(RUN) mypy libs/common/src services/upload/src services/delivery/src services/processor/src deploy/local/src tools/admin/src tests bench

k8s-render: $(STAMP) ## Render the Kubernetes overlays (deploy/k8s) to .devstack/k8s/<overlay>.yaml
	@mkdir -p .devstack/k8s
	@for overlay in dev prod; do \
		$(RUN) kubectl kustomize deploy/k8s/overlays/$$overlay > .devstack/k8s/$$overlay.yaml && \
		echo "rendered .devstack/k8s/$$overlay.yaml"; done

IMAGE_TAG ?= dev
IMAGE_REGISTRY ?= registry.example.com/imagery
images: ## Build the four container images (needs a Docker engine)
	@docker info >/dev/null 2>&1 || { echo "make images needs a running Docker engine; none answers here (docker info failed). Build on a machine or CI runner with Docker." >&2; exit 2; }
	@for target in upload delivery processor migrate; do \
		docker build -f deploy/docker/Dockerfile --target $$target -t $(IMAGE_REGISTRY)/$$target:$(IMAGE_TAG) . || exit 1; \
	done

clean: ## Remove the installed tools, venv and local stack data
	rm -rf $(TOOLS) $(VENV) .devstack .mypy_cache .ruff_cache .pytest_cache
