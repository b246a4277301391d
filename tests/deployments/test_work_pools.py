"""prefect.yaml against a real Prefect server: the pools created as `make ui` creates them,
every deployment deployed, and the GPU retrain's Kubernetes job rendered from the pool's
template by Prefect's own templating (what the Kubernetes worker does before it submits)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import get_current_settings
from prefect.testing.utilities import prefect_test_harness
from prefect.utilities.processutils import command_from_string
from prefect.utilities.templating import apply_values
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "registry.fab-a.dieguard.internal/dieguard/worker:0.1.0"
POOLS = {
    "dieguard-process": ["--type", "process"],
    "dieguard-gpu": ["--type", "kubernetes", "--base-job-template",
                     "deployments/prefect/kubernetes-gpu-pool.json"],
}  # fmt: skip


def prefect(*args: str) -> str:
    """Run the prefect CLI against the harness's server; its output."""
    env = os.environ | {
        "PREFECT_API_URL": get_current_settings().api.url,
        "DIEGUARD_HOME": str(ROOT),
        "DIEGUARD_WORKER_IMAGE": IMAGE,
    }
    cli = Path(sys.executable).parent / "prefect"
    result = subprocess.run([str(cli), *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def deployed():
    """A Prefect server with the pools and every deployment of prefect.yaml."""
    with prefect_test_harness(server_startup_timeout=120):
        for name, options in POOLS.items():
            prefect("work-pool", "create", name, *options)
        prefect("--no-prompt", "deploy", "--all")
        yield


def read(coroutine_factory):
    import asyncio

    async def run():
        async with get_client() as client:
            return await coroutine_factory(client)

    return asyncio.run(run())


def test_every_deployment_of_the_project_file_is_deployed(deployed):
    names = [d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]]
    found = read(lambda c: c.read_deployments())
    assert sorted(d.name for d in found) == sorted(names)
    pools = {d.name: d.work_pool_name for d in found}
    assert pools["weekly-retrain-gpu"] == "dieguard-gpu"
    assert {pools[n] for n in names if n != "weekly-retrain-gpu"} == {"dieguard-process"}


def test_the_rollout_steps_on_an_interval_one_step_at_a_time(deployed):
    found = {d.name: d for d in read(lambda c: c.read_deployments())}
    step = found["rollout-step"]
    ((schedule,),) = [[s.schedule for s in step.schedules if s.active]]
    assert schedule.interval == timedelta(minutes=10)
    assert step.global_concurrency_limit.limit == 1
    assert step.concurrency_options.collision_strategy == "CANCEL_NEW"
    assert step.parameters["log_url"].startswith("sqlite:///")
    assert not found["rollout-start"].schedules  # started by weekly-retrain or a person
    retrain = found["weekly-retrain"].parameters["rollout_deployment"]
    assert retrain == "rollout-start/rollout-start"


def test_the_approval_waits_outside_the_retrains_concurrency_limit(deployed):
    found = {d.name: d for d in read(lambda c: c.read_deployments())}
    approval = found["approve-candidate"]
    assert approval.global_concurrency_limit is None and approval.work_queue_name == "approval"
    assert not approval.schedules  # started by weekly-retrain for each candidate
    for name in ("weekly-retrain", "weekly-retrain-gpu"):
        retrain = found[name].parameters["approval_deployment"]
        assert retrain == "approve-candidate/approve-candidate"
    assert found["weekly-retrain"].global_concurrency_limit.limit == 1


def test_the_gpu_retrain_renders_a_one_gpu_job(deployed):
    found = read(lambda c: c.read_deployments())
    (gpu,) = [d for d in found if d.name == "weekly-retrain-gpu"]
    assert gpu.parameters["config"] == "configs/gpu.yaml"
    assert not any(s.active for s in gpu.schedules)  # activated where a GPU node serves it
    pool = read(lambda c: c.read_work_pool("dieguard-gpu"))
    assert pool.type == "kubernetes"
    template = pool.base_job_template
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    config = apply_values(template["job_configuration"], defaults | gpu.job_variables)

    job = config["job_manifest"]
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == "dieguard-training"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["memory"] == "48Gi" and resources["limits"]["memory"] == "64Gi"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    (shm,) = pod["volumes"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert container["volumeMounts"] == [{"name": shm["name"], "mountPath": "/dev/shm"}]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_gpu_job_runs_the_flow_run_command(deployed, tmp_path):
    """Rendered as the Kubernetes worker renders it, the pod's effective command (the
    image's entrypoint with the container's args) is the flow-run command, not a worker."""
    found = read(lambda c: c.read_deployments())
    (gpu,) = [d for d in found if d.name == "weekly-retrain-gpu"]
    pool = read(lambda c: c.read_work_pool("dieguard-gpu"))
    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(
        pool.base_job_template, gpu.job_variables
    ))  # fmt: skip
    run = FlowRun(flow_id=gpu.flow_id, deployment_id=gpu.id, name="gpu-run")
    config.prepare_for_flow_run(run, gpu)
    (container,) = config.job_manifest["spec"]["template"]["spec"]["containers"]
    assert "command" not in container  # the image's entrypoint stays
    flow_run_command = command_from_string(config._base_flow_run_command())
    assert container["args"] == flow_run_command == ["prefect", "flow-run", "execute"]
    assert {"name": "PREFECT__FLOW_RUN_ID", "value": str(run.id)} in container["env"]

    stub = tmp_path / "prefect"  # stands in for the CLI: says what it was asked to run
    stub.write_text('#!/bin/sh\necho "prefect $*"\n')
    stub.chmod(0o755)
    entrypoint = ROOT / "deployments" / "docker" / "worker-entrypoint.sh"
    ran = subprocess.run(
        [str(entrypoint), *container["args"]], capture_output=True, text=True, timeout=30,
        env=os.environ | {"PATH": f"{tmp_path}:{os.environ['PATH']}"}, check=True,
    )  # fmt: skip
    assert ran.stdout.strip() == "prefect flow-run execute"


def test_the_server_refuses_job_variables_outside_the_pools_schema(deployed):
    flow_id = read(lambda c: c.read_deployments())[0].flow_id
    with pytest.raises(PrefectHTTPStatusError, match="gpu_count"):
        read(lambda c: c.create_deployment(
            flow_id, f"bad-{uuid.uuid4().hex[:6]}", work_pool_name="dieguard-gpu",
            job_variables={"gpu_count": "two"},
        ))  # fmt: skip
