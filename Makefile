# velnet: `make demo` runs the main job on a built-in default, `make test` runs the tests.
# Both install what they need on first use (scripts/install.sh, into $(VENV)).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.velnet-installed
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install test test-fast demo demo-halos docs wheelhouse wheelhouse-docker docker-check gpu-campaign \
        gpu-campaign-pack clean

$(STAMP): setup.cfg scripts/install.sh scripts/requirements.txt
	VELNET_VENV=$(VENV) bash scripts/install.sh
	touch $@

install: $(STAMP)

# Tests run in one process per core (pytest-xdist; a file's tests stay in one process, so its
# fixtures are built once): TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= auto

test: $(STAMP)
	$(PY) -m pytest -q -rs -n $(TEST_WORKERS) --dist loadfile --durations=25

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

demo: $(STAMP)
	$(PY) -m experiments.demo

# The 2024 halo paper's reconstruction of a fresh halo box with the shipped halo models and references.
demo-halos: $(STAMP)
	$(PY) -m experiments.demo_halos

# The API reference, generated from the docstrings by pdoc into docs/api (open docs/api/index.html);
# any pdoc warning (a module that does not import, a docstring or annotation it cannot read) fails it.
API_MODULES := velnet $(subst /,.,$(patsubst %/__init__.py,%,$(wildcard velnet/*/__init__.py))) \
               $(subst /,.,$(basename $(filter-out velnet/__init__.py,$(wildcard velnet/*.py)))) data_prep
docs: $(STAMP)
	$(PY) -c "import warnings, pdoc.__main__; warnings.filterwarnings('error', module='pdoc'); pdoc.__main__.cli()" \
	  --docformat google -o docs/api $(API_MODULES)

# Everything an air-gapped node lacks, as wheels and sdists in one folder (dist/wheelhouse-*):
# `make wheelhouse` for the GPU node (Python 3.12, JAX), WHEELHOUSE_PROFILE=prep to add the
# nbodykit / fastpm stack. PyPI must be reachable.
WHEELHOUSE_PROFILE ?= gpu-node
WHEELHOUSE_PYTHON ?= 3.12
wheelhouse: $(STAMP)
	PYTHON=$(PY) bash scripts/wheelhouse.sh --profile $(WHEELHOUSE_PROFILE) --python-version $(WHEELHOUSE_PYTHON)

# The wheelhouse the Dockerfile installs from (dist/wheelhouse-docker-py3.11): this
# environment's packages for its own Python; DOCKER_JAX=cuda12 adds JAX's CUDA 12 plugin.
DOCKER_PYTHON ?= 3.11
DOCKER_JAX ?= cpu
wheelhouse-docker: $(STAMP)
	PYTHON=$(PY) bash scripts/wheelhouse.sh --profile docker --python-version $(DOCKER_PYTHON) --jax $(DOCKER_JAX)

# Build the GPU image on a local Debian base and run a tiny job in it (installs docker.io
# and starts dockerd where needed; root). Logs and timings in runs/docker-check.
docker-check: $(STAMP)
	PYTHON=$(PY) bash scripts/docker_check.sh

# The GPU campaign (scripts/gpu_campaign.sh): gpu-campaign-pack here makes the data it
# carries (dist/campaign-data); gpu-campaign runs it on the node with its python3, or with
# $(PY) where that exists (CAMPAIGN_ARGS=--tiny: the CPU dry run here).
gpu-campaign-pack: $(STAMP)
	PYTHON=$(PY) bash scripts/gpu_campaign.sh --pack $(CAMPAIGN_ARGS)

gpu-campaign:
	PYTHON=$(if $(wildcard $(PY)),$(PY),python3) bash scripts/gpu_campaign.sh $(CAMPAIGN_ARGS)

clean:
	rm -rf runs .pytest_cache
