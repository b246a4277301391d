#!/usr/bin/env bash
# The local control room: a Prefect server with its UI, a process worker that runs the
# weekly-retrain and approve-candidate deployments, and the MLflow UI over the embedded
# registry. Ctrl-C stops all.
set -euo pipefail
BIN=${BIN:-.venv/bin}
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlruns/mlflow.db}
export PREFECT_API_URL="http://127.0.0.1:${PREFECT_PORT}/api"
export DIEGUARD_HOME="$PWD" MLFLOW_TRACKING_URI="$TRACKING_URI"
export DIEGUARD_WORKER_IMAGE=${DIEGUARD_WORKER_IMAGE:-dieguard-worker:local}
trap 'kill 0' EXIT INT TERM

"$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" &
until curl -sf "$PREFECT_API_URL/health" >/dev/null; do sleep 1; done
"$BIN/prefect" work-pool inspect dieguard-process >/dev/null 2>&1 ||
    "$BIN/prefect" work-pool create dieguard-process --type process
# the GPU pool's deployment is listed (schedule inactive); no worker serves it here
"$BIN/prefect" work-pool inspect dieguard-gpu >/dev/null 2>&1 ||
    "$BIN/prefect" work-pool create dieguard-gpu --type kubernetes \
        --base-job-template deployments/prefect/kubernetes-gpu-pool.json
"$BIN/prefect" --no-prompt deploy --all
"$BIN/prefect" worker start --pool dieguard-process &
mkdir -p mlruns
"$BIN/mlflow" ui --backend-store-uri "$TRACKING_URI" --host 127.0.0.1 --port "$MLFLOW_PORT" &

cat <<MSG

  Prefect UI  http://127.0.0.1:${PREFECT_PORT}   (deployment weekly-retrain; approve-candidate runs wait for approval there)
  MLflow UI   http://127.0.0.1:${MLFLOW_PORT}   (registered model dieguard: versions, aliases, lineage tags)
  Start a retrain now:  PREFECT_API_URL=$PREFECT_API_URL $BIN/prefect deployment run weekly-retrain/weekly-retrain
  Ctrl-C stops everything.

MSG
wait
