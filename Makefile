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

clean:
	rm -rf runs .pytest_cache
