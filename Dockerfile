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
COPY services/playbach services/playbach
COPY services/${SERVICE} services/${SERVICE}
RUN pip install --no-cache-dir ".[${SERVICE}]"
USER nobody
ENTRYPOINT ["sh", "-c", "exec python -m \"$SERVICE\" \"$@\"", "--"]
