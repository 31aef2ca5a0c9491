# sglang-tuner. The README's two commands: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TRIALS  ?= 50
SPACE   ?= search_spaces/sglang-rtx5090-qwen3-32b-awq.yaml
STORAGE ?= sqlite:///storage/tuner.db
STUDY   ?= sglang-rtx5090-qwen3-32b-awq
TEST_WORKERS ?= 2  # make test: pytest-xdist workers, a module each at a time (tests/conftest.py)

.PHONY: setup demo study sim test test-loaded test-quick lint report dashboard nightly bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## create .venv and install the package with its dev tools

demo: setup  ## install, then run the 50-trial study on the simulated RTX 5090 (SQLite under storage/)
	$(BIN)/python -m tuner.study --space $(SPACE) --storage $(STORAGE) --trials $(TRIALS)

study: demo

.PHONY: demo-real
demo-real: setup  ## the REAL SGLang 0.5.23 on the CPU: set up its venv and tiny model, run an 8-trial study (SQLite under storage/)
	scripts/setup-sglang-cpu.sh >/dev/null
	mkdir -p storage/models
	ln -sfn "$$(scripts/setup-sglang-cpu-model.sh | tail -n 1)" storage/models/sglang-tiny-llama
	$(BIN)/python -m tuner.study --space search_spaces/sglang-cpu-tiny.yaml --storage $(STORAGE) \
		--study sglang-cpu-tiny --trials 8 --seed 0

sim: setup  ## start the simulated SGLang server on port 30000
	$(BIN)/python -m tuner.sim --model-path Qwen/Qwen3-32B-AWQ --port 30000

test: setup lint  ## lint, then install daemons/tools the tests need (docker, postgres, chromium, llama-server, sglang parser) and run every test
	TUNER_REQUIRE_ALL=1 scripts/setup-test-env.sh $(BIN)/python -m pytest -q -ra \
		-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test-loaded: setup  ## make test with a busy loop competing for a core (what a shared CI machine does)
	scripts/with-busy-core.sh $(MAKE) test

test-quick: setup  ## unit + integration tests that need nothing beyond the venv (no daemons, engines or GPU)
	$(BIN)/python -m pytest -q -ra tests/unit tests/integration \
		-m "not docker and not postgres and not llamacpp and not sglang_cpu and not gpu"

lint: setup  ## ruff, mypy and the import-linter layer contracts (pyproject.toml, docs/DESIGN.md)
	$(BIN)/ruff check tuner tests bench
	$(BIN)/ruff format --check tuner tests bench
	$(BIN)/mypy tuner
	$(BIN)/lint-imports

report: setup  ## CSV/Parquet/Markdown/HTML report of the study under storage/report/
	$(BIN)/python -m tuner.report --storage $(STORAGE) --study $(STUDY) --out storage/report

dashboard: setup  ## optuna-dashboard on the study database with the server logs as artifacts
	$(BIN)/python -m tuner.report.dashboard --storage $(STORAGE) --artifact-dir storage/artifacts

nightly: setup  ## the nightly retune job (see README "Nightly retune")
	$(BIN)/python -m tuner.nightly --space $(SPACE) --storage $(STORAGE)

bench: setup  ## the benchmarks under bench/ (results in bench/results/)
	$(BIN)/python bench/client_ceiling.py

clean:
	rm -rf storage/*.db storage/logs storage/artifacts storage/report
