# sce_sweeps: `make demo` runs a small SCE sweep on Fashion-MNIST and prints its table;
# `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data demo test test-fast lint format slurm-up slurm-down bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# Fashion-MNIST: Debian's package where apt is usable as root, else torchvision's download.
data: setup
	@if [ -d $(FMNIST) ] || [ -d data/FashionMNIST/raw ]; then \
		echo "Fashion-MNIST: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
		|| $(PY) -c "import torchvision; torchvision.datasets.FashionMNIST('data', download=True)"; \
	else \
		$(PY) -c "import torchvision; torchvision.datasets.FashionMNIST('data', download=True)"; \
	fi

# The demo: a lambda sweep of the embedded default through the local launcher, its ablation
# table (with the random-init and raw-pixel baselines) and the command that browses its runs.
# Extra overrides: make demo DEMO_ARGS="hydra.launcher.max_parallel=1 seed=1"
demo: data
	@dir=sweeps/lambda_demo/$$(date +%Y-%m-%d_%H-%M-%S); start=$$(date +%s); \
	$(PY) -m sce_sweeps -m +sweep=demo hydra.sweep.dir=$$dir $(DEMO_ARGS) && \
	$(PY) analysis/ablation_table.py $$dir && \
	echo "make demo: sweep and table in $$(( $$(date +%s) - start )) s ($$dir)" && \
	$(PY) -c 'import shlex, sys; print("Browse the runs:", shlex.join(sys.argv[1:]))' \
		$(VENV)/bin/aim up --repo "$(CURDIR)/$$dir/aim"

test: data
	$(PY) -m pytest

test-fast: data
	$(PY) -m pytest -m "not slow and not slurm and not e2e"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

slurm-up:
	bash scripts/slurm_cluster.sh start

slurm-down:
	bash scripts/slurm_cluster.sh stop

bench: setup
	$(PY) benchmarks/step_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
