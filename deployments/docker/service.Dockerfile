# syntax=docker/dockerfile:1
# The inspection service of one station: `dieguard serve` on :8000 (API, dashboard, /metrics).
# Build from the repository root:
#   docker build -f deployments/docker/service.Dockerfile -t dieguard-service .
# ONNX Runtime runs on the GPU when the container has one (NVIDIA container runtime).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY dieguard/ dieguard/
COPY model/ model/
COPY flows/ flows/
COPY tasks/ tasks/
COPY registry/ registry/
COPY service/ service/
COPY monitoring/ monitoring/
COPY expectations/ expectations/
RUN pip install -c constraints.txt .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DIEGUARD_STATE_DIR=/var/lib/dieguard \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
RUN groupadd --system --gid 10001 dieguard \
    && useradd --system --uid 10001 --gid dieguard --home-dir /home/dieguard --create-home dieguard \
    && mkdir -p /var/lib/dieguard && chown dieguard:dieguard /var/lib/dieguard
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/dieguard
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["dieguard", "serve", "--host", "0.0.0.0"]
CMD ["--port", "8000"]
