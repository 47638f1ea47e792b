# velnet: `make demo` runs the main job on a built-in default, `make test` runs the tests.
# Both install what they need on first use (scripts/install.sh, into $(VENV)).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.velnet-installed
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install test test-fast demo wheelhouse clean

$(STAMP): setup.cfg scripts/install.sh scripts/requirements.txt
	VELNET_VENV=$(VENV) bash scripts/install.sh
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -rs

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(PY) -m experiments.demo

# Everything an air-gapped node lacks, as wheels and sdists in one folder (dist/wheelhouse-*):
# `make wheelhouse` for the GPU node (Python 3.12, JAX), WHEELHOUSE_PROFILE=prep to add the
# nbodykit / fastpm stack. PyPI must be reachable.
WHEELHOUSE_PROFILE ?= gpu-node
WHEELHOUSE_PYTHON ?= 3.12
wheelhouse: $(STAMP)
	PYTHON=$(PY) bash scripts/wheelhouse.sh --profile $(WHEELHOUSE_PROFILE) --python-version $(WHEELHOUSE_PYTHON)

clean:
	rm -rf runs .pytest_cache
