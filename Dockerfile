# syntax=docker/dockerfile:1
# One image for the five Book Rental services; the command picks the service:
#   docker run IMAGE nameko run --config config.yml product.service:ProductService
# or, with no command, SERVICE_CLASS=product.service:ProductService.
# docker-compose.yml and k8s/ set the command per service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONWARNINGS=ignore \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
# Every pinned package has a manylinux wheel (psycopg2-binary bundles libpq),
# so no compiler is needed.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# An unprivileged user owning nothing but the data directory (used only by the
# SQLite defaults; compose and Kubernetes point the services at PostgreSQL).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app

COPY . .
# Byte-compiled now: the user cannot write .pyc files, and every probe starts Python.
RUN python -m compileall -q . \
 && mkdir -p var/data && chown app:app var/data

USER 10001:10001

# The gateway's HTTP port (GATEWAY_ADDRESS); backend services open no port.
EXPOSE 8000

# Reads NAME_FILE secrets into NAME, then execs the command (deploy/entrypoint.py).
ENTRYPOINT ["python", "/app/deploy/entrypoint.py"]
CMD []
