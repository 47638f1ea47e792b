# velnet on Debian 12 with Python 3.11, installed by the same script as `make install`.
# CPU image for now (the GPU image with a TensorFlow GPU base is the scale issue's work).
#   docker build -t velnet .
#   docker run --rm -v $PWD/runs:/opt/velnet/runs velnet            # make demo
#   docker run --rm velnet .venv/bin/velnet --help
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential make libopenmpi-dev openmpi-bin \
        libfftw3-dev libgsl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/velnet
COPY setup.cfg pyproject.toml README.md Makefile ./
COPY scripts scripts
COPY velnet velnet
COPY data_prep data_prep
COPY experiments experiments
COPY tests tests
RUN make install && rm -rf /root/.cache/pip
ENV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
CMD ["make", "demo"]
