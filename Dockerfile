# chaosfm on the CPU: the README's install (the pinned runtime lock, then the project without its
# dependencies) on Python 3.11, and the README's demo as the default command.
#
#   docker build -t chaosfm:cpu .
#   docker run --rm -v "$PWD/runs:/work/runs" chaosfm:cpu     # writes runs/demo-<date>-<time>/
#
# The base is pinned by tag. To pin it by digest, look the digest up (`docker buildx imagetools
# inspect python:3.11-slim-bookworm`, or after a pull `docker inspect --format
# '{{index .RepoDigests 0}}' python:3.11-slim-bookworm`) and build with
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# One stage: every locked package installs from a wheel (no compiler) and pip keeps no cache, so a
# build stage would leave nothing behind to save. No HEALTHCHECK: the default command is a batch
# job that exits when done, not a service. docs/development.md#containers has the details.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="chaosfm" \
      org.opencontainers.image.description="Forecast chaotic and financial time series with JAX (CPU image)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

# JAX_PLATFORMS=cpu: no probing for GPU or TPU plugins (and no warning about their absence).
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    JAX_PLATFORMS=cpu \
    MPLBACKEND=Agg

RUN python -m venv /opt/venv

# The README's install commands, from the project folder; the lock first, so that editing the
# code does not reinstall the dependencies.
WORKDIR /opt/chaosfm
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --no-deps -e . \
 && python -m compileall -q src

# A non-root user; /work is where commands run, runs/ (the default output folder) is writable, and
# the configs sit where the README's `--config configs/...` commands look for them.
RUN useradd --create-home --uid 1000 --shell /bin/bash chaosfm \
 && mkdir -p /work/runs \
 && chown chaosfm:chaosfm /work /work/runs
COPY configs /work/configs
USER chaosfm
WORKDIR /work

CMD ["chaosfm", "demo", "--fast"]
