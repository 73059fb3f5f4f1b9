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
PROTO_OUT := clients/python/src
# The stubs belong to imagery-client and must import on the oldest grpcio and protobuf it
# declares (clients/python/pyproject.toml), so they come from this pinned grpcio-tools (its
# protoc writes protobuf 6.30.0 gencode) in an environment of its own, never the workspace's.
GRPCIO_TOOLS_VERSION := 1.72.1
MYPY_PROTOBUF_VERSION := 5.1.0
PROTOC := $(UV) tool run --quiet --python $(VENV)/bin/python --from grpcio-tools==$(GRPCIO_TOOLS_VERSION) \
	--with mypy-protobuf==$(MYPY_PROTOBUF_VERSION) python -m grpc_tools.protoc -Iprotos -Ithird_party/googleapis
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup run test test-unit test-integration test-e2e test-deploy bench proto proto-check proto-breaking \
	lint fmt typecheck ts-check k8s-render images client-wheel clean

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	@test -n "$(PYTHON)" || { echo "imagery needs Python >= 3.11 on PATH (python3.11, python3.12, ...)" >&2; exit 1; }
	@echo "installing uv $(UV_VERSION) into $(TOOLS)/ with $(PYTHON)"
	@$(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): $(UV) uv.lock pyproject.toml libs/common/pyproject.toml services/*/pyproject.toml deploy/local/pyproject.toml tools/admin/pyproject.toml clients/python/pyproject.toml
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

proto: $(STAMP) ## Regenerate the Python stubs (+ .pyi) from protos/ into clients/python (imagery-client)
	$(RUN) buf lint
	$(PROTOC) --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		--mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) protos/imagery/v1/*.proto

proto-check: $(STAMP) ## Fail when buf lint fails or checked-in stubs differ from protos/
	$(RUN) buf lint
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; mkdir $$tmp/out; \
	$(PROTOC) --python_out=$$tmp/out --grpc_python_out=$$tmp/out \
		--mypy_out=$$tmp/out --mypy_grpc_out=$$tmp/out protos/imagery/v1/*.proto 2>$$tmp/log \
		|| { cat $$tmp/log >&2; exit 1; }; \
	for f in $$(cd $$tmp/out && find . -type f | sort); do \
		cmp -s "$$tmp/out/$$f" "$(PROTO_OUT)/$$f" || { echo "stub drift: $(PROTO_OUT)/$$f differs from protos/ (run make proto)" >&2; exit 1; }; \
	done; \
	for f in $$(cd $(PROTO_OUT) && find imagery/v1 -name '*_pb2*' -not -path '*/__pycache__/*' | sort); do \
		test -e "$$tmp/out/$$f" || { echo "stub drift: $(PROTO_OUT)/$$f has no .proto any more (delete it)" >&2; exit 1; }; \
	done; echo "proto-check: stubs match protos/ (grpcio-tools $(GRPCIO_TOOLS_VERSION))"

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
	$(RUN) mypy clients/python/src libs/common/src services/upload/src services/delivery/src services/processor/src deploy/local/src tools/admin/src tests bench

k8s-render: $(STAMP) ## Render the Kubernetes overlays (deploy/k8s) to .devstack/k8s/<overlay>.yaml
	@mkdir -p .devstack/k8s
	@for overlay in dev prod; do \
		$(RUN) kubectl kustomize deploy/k8s/overlays/$$overlay > .devstack/k8s/$$overlay.yaml && \
		echo "rendered .devstack/k8s/$$overlay.yaml"; done

client-wheel: $(UV) ## Build the imagery-client wheel (clients/python) into dist/
	$(UV) build --wheel --out-dir dist clients/python

IMAGE_TAG ?= dev
IMAGE_REGISTRY ?= registry.example.com/imagery
images: ## Build the four container images (needs a Docker engine)
	@docker info >/dev/null 2>&1 || { echo "make images needs a running Docker engine; none answers here (docker info failed). Build on a machine or CI runner with Docker." >&2; exit 2; }
	@for target in upload delivery processor migrate; do \
		docker build -f deploy/docker/Dockerfile --target $$target -t $(IMAGE_REGISTRY)/$$target:$(IMAGE_TAG) . || exit 1; \
	done

clean: ## Remove the installed tools, venv and local stack data
	rm -rf $(TOOLS) $(VENV) .devstack .mypy_cache .ruff_cache .pytest_cache
