# syntax=docker/dockerfile:1
# A Prefect worker of the `dieguard-process` pool: it runs the flows of prefect.yaml
# (weekly-retrain, rollout, drift-monitor) as processes in this container. The same image
# is the pod of a weekly-retrain-gpu Kubernetes job: given the flow-run command as its
# arguments, the entrypoint runs that flow run instead of a worker. It carries
# prefect-kubernetes, so `prefect worker start --pool dieguard-gpu` runs from it too.
# Build from the repository root:
#   docker build -f deployments/docker/worker.Dockerfile -t dieguard-worker .
# Set PREFECT_API_URL to the Prefect server; the deployments' pull step changes into
# DIEGUARD_HOME, where the flows, configs and prefect.yaml lie.

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
RUN pip install -c constraints.txt .[kubernetes]

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DIEGUARD_HOME=/app \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
RUN groupadd --system --gid 10001 dieguard \
    && useradd --system --uid 10001 --gid dieguard --home-dir /home/dieguard --create-home dieguard
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY pyproject.toml prefect.yaml ./
COPY configs/ configs/
COPY dieguard/ dieguard/
COPY model/ model/
COPY flows/ flows/
COPY tasks/ tasks/
COPY registry/ registry/
COPY service/ service/
COPY monitoring/ monitoring/
COPY expectations/ expectations/
COPY deployments/docker/worker-entrypoint.sh /usr/local/bin/dieguard-entrypoint
RUN mkdir -p /app/runs /app/data && chown -R dieguard:dieguard /app/runs /app/data
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
ENTRYPOINT ["dieguard-entrypoint"]
