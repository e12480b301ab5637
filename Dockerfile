# One image recipe for every service:
#   docker build --build-arg SERVICE=gateway -t playbach/gateway .
# SERVICE is a package under services/ (and its pip extra); APT_PACKAGES adds system packages
# (the synth's FluidSynth and SoundFont). Arguments after the image name go to the service:
#   docker run playbach/trainer train --preset tiny
FROM python:3.11-slim
ARG SERVICE
ARG APT_PACKAGES=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MODELS_DIR=/models SERVICE=${SERVICE} HOME=/tmp
RUN if [ -n "$APT_PACKAGES" ]; then apt-get update \
    && apt-get install -y --no-install-recommends $APT_PACKAGES \
    && rm -rf /var/lib/apt/lists/*; fi
WORKDIR /app
COPY pyproject.toml ./
# Dependencies first, from pyproject.toml alone (empty packages stand in for the code): a
# code change then rebuilds the last layers in seconds, not the downloads.
RUN mkdir -p services/playbach services/${SERVICE} \
    && touch services/playbach/__init__.py services/${SERVICE}/__init__.py \
    && pip install --no-cache-dir ".[${SERVICE}]" && pip uninstall -y -q playbach \
    && rm -rf services build
COPY services/playbach services/playbach
COPY services/${SERVICE} services/${SERVICE}
RUN pip install --no-cache-dir --no-deps . && rm -rf build
# The shipped models travel in every image; `python -m playbach.seed` puts them onto the
# models volume (compose's `models` service, the Kubernetes init container).
# The cello suites' MIDI, so the trainer image reproduces both shipped models (make train).
COPY models /opt/playbach/models
COPY data /opt/playbach/data
# Volumes mounted here start with this ownership (Docker and Podman copy it on first use).
RUN mkdir -p /models /runs /cache && chown 65534:65534 /models /runs /cache
USER 65534:65534
ENTRYPOINT ["sh", "-c", "exec python -m \"$SERVICE\" \"$@\"", "--"]
