# One image for every Sandesh process; the Deployment picks the command.
# Build: docker build -t sandesh:dev .   (the local stack does not need it)
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-deps . \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin sandesh
USER 10001
# gunicorn writes nothing but the Prometheus multiprocess files (an emptyDir).
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/prom SANDESH_BIND_HOST=0.0.0.0
EXPOSE 8080
CMD ["python", "-c", "print('choose a command: see deploy/k8s/base')"]
