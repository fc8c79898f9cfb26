# Two commands do all the set-up on a fresh machine: `make demo` and `make test`; `make test-fast` is the quick loop.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data
MODEL ?=

.PHONY: venv demo notebook test test-fast lint format bench lock clean cluster-up cluster-down

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

venv: $(VENV)/.installed

# End to end on the embedded synthetic data.
demo: venv
	$(PY) -m jobs.demo --workdir $(DATA) $(if $(MODEL),--model $(MODEL),)

# notebooks/inspect_run.ipynb on `make demo`'s outputs (DATA, MODEL): installs Jupyter into the venv when it is
# missing (requirements-notebook.txt; make demo and make test never need it), writes a copy whose parameters name
# those outputs to $(DATA)/inspect_run.ipynb (papermill --prepare-only: nothing is run), and opens it.
NOTEBOOK_MODEL = $(or $(MODEL),$(shell $(PY) -c "from pipelines.config import load_job_config; print(load_job_config('train').model)"))
notebook: venv
	@$(PY) -c "import notebook" 2>/dev/null || $(PY) -m pip install --quiet -r requirements-notebook.txt -c constraints.txt
	@test -f $(DATA)/runs/$(NOTEBOOK_MODEL)/run.json || { echo "no finished run in $(DATA)/runs/$(NOTEBOOK_MODEL): run make demo first"; exit 1; }
	$(PY) -m papermill --prepare-only --no-progress-bar notebooks/inspect_run.ipynb $(DATA)/inspect_run.ipynb \
		-p samples $(abspath $(DATA))/samples -y '{"runs": ["$(abspath $(DATA))/runs/$(NOTEBOOK_MODEL)"]}'
	$(PY) -m jupyter notebook $(DATA)/inspect_run.ipynb $(if $(filter 0,$(shell id -u)),--allow-root,)

# Everything, the slow end-to-end tests included (what CI runs, through .ci/run).
test: venv lint
	$(PY) -m pytest -q tests

# The quick loop: every test not marked `slow` (2 min 33 s, 525 tests, measured 2026-12-03 before the notebook and plot tests).
test-fast: venv lint
	$(PY) -m pytest -q -m "not slow" tests

# One formatter and linter (ruff, configured in pyproject.toml); `make format` rewrites the code.
lint: venv
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# A one-machine Spark standalone cluster (docs/cluster.md): a master on MASTER_PORT and WORKERS workers.
WORKERS ?= 1
WORKER_CORES ?= 1
WORKER_MEMORY ?= 1g
MASTER_PORT ?= 7077
MASTER_UI_PORT ?= 8080
CLUSTER_DIR ?= $(DATA)/cluster
cluster-up: venv
	$(PY) -m jobs.spark_cluster up --workers $(WORKERS) --cores $(WORKER_CORES) --memory $(WORKER_MEMORY) \
		--port $(MASTER_PORT) --webui-port $(MASTER_UI_PORT) --workdir $(CLUSTER_DIR)

# No venv prerequisite: without one, nothing was started.
cluster-down:
	$(PY) -m jobs.spark_cluster down --workdir $(CLUSTER_DIR)

# Benchmarks (not in CI): installs the benchmark-only extras, then runs them all at SCALES.
SCALES ?= 1000000,10000000
bench: venv
	$(PY) -m pip install --quiet -r requirements-bench.txt -c constraints.txt
	$(PY) -m benchmarks.run --scales $(SCALES) --workdir $(DATA)/bench --out BENCHMARKS.md

lock: venv
	$(PY) -m pip freeze --exclude-editable | sed '1i # Exact versions verified together (pip freeze of a working .venv). Regenerate with: make lock' > constraints.txt

clean:
	rm -rf $(VENV) $(DATA)
