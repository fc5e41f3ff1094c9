# The README's two Quickstart commands: `make run` (set up + main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run deploy-demo test test-fast lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]" torch==2.13.0
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m simulations.run --preset default --clients 3 --methods treelora fedavg-lora local-only

# a secure 3-node federation on loopback: TLS SuperLink + node authentication + database, 3 SuperNodes, flwr run,
# summary; every process stopped afterwards (simulations/deploy/demo.py). `make deploy-demo DEMO=--quick`: ~2 min
deploy-demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m simulations.deploy.demo $(DEMO)

# everything, the real-process suites included (what CI runs)
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# everyday work: without the slow real-process suites (SuperLink, SuperNodes, flwr run)
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
