# `make run` and `make test` each create .venv if missing, install, then do their job.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
REQUEST ?= data/requests/demo-object-star.yaml
# pytest-xdist workers (tests/conftest.py gives each its share of the cores)
WORKERS ?= 2
PYTEST := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -n $(WORKERS) --dist loadgroup --no-loadscope-reorder

.PHONY: setup run test test-fast bench bench-scale bench-sd bench-sweep bench-attacks bench-chain clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/razor run $(REQUEST)

test: $(STAMP)
	$(PYTEST) --durations=15

test-fast: $(STAMP)
	$(PYTEST) -m "not stack and not slow"

bench: $(STAMP)
	$(PY) benchmarks/clip_demo.py
	$(PY) benchmarks/cache.py

bench-scale: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/scale.py

bench-sd: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/sd_demo.py

# every attack after every method, per family (benchmarks/results/attacks/<family>/), resumable
bench-attacks: $(STAMP)
	for f in clip sd vlm; do HF_HUB_OFFLINE=1 $(PY) benchmarks/attacks.py --family $$f --resume || exit 1; done

# every demo label of every family, resumable (benchmarks/results/sweep/); SWEEP="--families clip" to narrow
bench-sweep: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/sweep.py $(SWEEP)

# 20 requests in a row through razor intake on the demo CLIP (benchmarks/results/chain/), resumable
bench-chain: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/chain.py --resume

clean:
	rm -rf runs .pytest_cache data/runs dvc.lock mlflow.db mlartifacts
