#!/bin/sh
# The worker image's entrypoint. Given a command, it runs it: a Prefect Kubernetes job
# (the weekly-retrain-gpu deployment) passes the flow-run command as the container's args,
# so the pod is that one flow run. Given none, it starts the dieguard-process worker.
set -e
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
exec prefect worker start --pool dieguard-process --type process --with-healthcheck
