"""The deployment files: every kustomize overlay rendered by kubectl and checked by checkov,
the alert rules and their unit tests run by promtool, the dashboard's queries, the
Dockerfiles and ArgoCD applications.

A test whose tool is missing (kubectl with kustomize v4.1 or newer, checkov, promtool) skips
with the reason, and fails instead when DIEGUARD_REQUIRE_DEPLOY_TOOLS=1; `make tools` installs them.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from service.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deployments"
OVERLAYS = sorted(p.name for p in (DEPLOY / "k8s" / "overlays").iterdir() if p.is_dir())
STATIONS = [f"station-{n}" for n in range(1, 5)]
SENSITIVE = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)
MIN_KUSTOMIZE = (4, 1)  # the `labels` field


def missing(reason: str) -> None:
    """Skip the test, or fail it when DIEGUARD_REQUIRE_DEPLOY_TOOLS=1."""
    if os.environ.get("DIEGUARD_REQUIRE_DEPLOY_TOOLS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def require(name: str) -> str:
    """The path of a command-line tool: beside this Python (the venv's), else on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        missing(f"{name} is not installed (`make tools` installs it)")
    return found


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = require("kubectl")
    version = json.loads(run(path, "version", "--client", "-o", "json").stdout)
    found = re.match(r"v(\d+)\.(\d+)", version.get("kustomizeVersion", ""))
    if not found or tuple(map(int, found.groups())) < MIN_KUSTOMIZE:
        missing(
            f"kubectl's kustomize ({version.get('kustomizeVersion', 'unknown')}) is older "
            "than v4.1 (`make tools` installs a newer kubectl)"
        )
    return path


@pytest.fixture(scope="module")
def rendered(kubectl) -> dict[str, list[dict]]:
    """Every overlay's objects, as `kubectl kustomize` renders them."""
    out = {}
    for fab in OVERLAYS:
        result = run(kubectl, "kustomize", f"deployments/k8s/overlays/{fab}")
        assert result.returncode == 0, result.stderr
        out[fab] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def component(objects: list[dict], kind: str, name: str) -> list[dict]:
    return [
        o
        for o in of_kind(objects, kind)
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == name
    ]


def containers(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"]


def workloads(objects: list[dict]) -> list[dict]:
    """The Deployments (the worker) and StatefulSets (the stations)."""
    return of_kind(objects, "Deployment") + of_kind(objects, "StatefulSet")


def test_there_are_three_fabs():
    assert OVERLAYS == ["fab-a", "fab-b", "fab-c"]


def test_kustomizations_are_well_formed():
    """Without kubectl too: each kustomization parses and names files that exist."""
    for path in (DEPLOY / "k8s").rglob("kustomization.yaml"):
        spec = yaml.safe_load(path.read_text())
        assert spec["kind"] == "Kustomization", path
        for resource in spec.get("resources", []):
            assert (path.parent / resource).exists(), f"{path}: {resource}"


@pytest.mark.parametrize("fab", OVERLAYS)
def test_each_fab_runs_four_gpu_stations_with_probes(rendered, fab):
    objects = rendered[fab]
    stations = component(objects, "StatefulSet", "station")
    assert sorted(d["metadata"]["name"] for d in stations) == [
        f"{fab}-dieguard-{s}" for s in STATIONS
    ]
    assert {d["metadata"]["labels"]["dieguard.io/station"] for d in stations} == set(STATIONS)
    for deployment in stations:
        assert deployment["metadata"]["namespace"] == f"dieguard-{fab}"
        assert deployment["spec"]["template"]["metadata"]["labels"]["dieguard.io/fab"] == fab
        (service,) = containers(deployment)
        assert service["image"].startswith(f"registry.{fab}.")
        assert service["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert service["readinessProbe"]["httpGet"]["path"] == "/readyz"
        resources = service["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
        assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])
        assert service["securityContext"]["allowPrivilegeEscalation"] is False
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]


@pytest.mark.parametrize("fab", OVERLAYS)
def test_each_station_keeps_its_state_on_its_own_persistent_volume(rendered, fab):
    """The spool behind every 200 must outlive the pod: a claim per station, not an
    emptyDir, mounted at the state folder, kept when the StatefulSet goes."""
    objects = rendered[fab]
    (config,) = of_kind(objects, "ConfigMap")
    state_dir = config["data"]["DIEGUARD_STATE_DIR"]
    services = {s["metadata"]["name"] for s in of_kind(objects, "Service")}
    for station in component(objects, "StatefulSet", "station"):
        spec = station["spec"]
        assert spec["replicas"] == 1  # one pod owns one spool
        assert spec["serviceName"] in services
        assert spec["persistentVolumeClaimRetentionPolicy"] == {
            "whenDeleted": "Retain",
            "whenScaled": "Retain",
        }
        (claim,) = spec["volumeClaimTemplates"]
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert claim["spec"]["resources"]["requests"]["storage"].endswith("Gi")
        (mount,) = [
            m for m in containers(station)[0]["volumeMounts"] if m["mountPath"] == state_dir
        ]
        assert mount["name"] == claim["metadata"]["name"]
        pod_volumes = {v["name"] for v in spec["template"]["spec"]["volumes"]}
        assert mount["name"] not in pod_volumes  # not shadowed by a per-pod volume
    assert config["data"]["DIEGUARD_IMAGE_STORE"] == f"s3://dieguard-{fab}/images"


@pytest.mark.parametrize("fab", OVERLAYS)
def test_each_fab_has_its_services_worker_and_settings(rendered, fab):
    objects = rendered[fab]
    services = of_kind(objects, "Service")
    assert len(services) == 4
    for service in services:
        assert service["spec"]["selector"]["dieguard.io/fab"] == fab
        assert service["spec"]["selector"]["dieguard.io/station"] in STATIONS
    (worker,) = component(objects, "Deployment", "worker")
    assert containers(worker)[0]["livenessProbe"]["httpGet"]["path"] == "/health"
    (config,) = of_kind(objects, "ConfigMap")
    data = config["data"]
    assert fab in data["DIEGUARD_DATABASE_URL"] and fab in data["MLFLOW_TRACKING_URI"]
    for deployment in workloads(objects):
        refs = [e["configMapRef"]["name"] for e in containers(deployment)[0]["envFrom"]]
        assert refs == [config["metadata"]["name"]]  # the generated, hashed name


@pytest.mark.parametrize("fab", OVERLAYS)
def test_credentials_are_secrets_by_reference_only(rendered, fab):
    objects = rendered[fab]
    assert not of_kind(objects, "Secret")  # created in the namespace, never in git
    for deployment in workloads(objects):
        for env in containers(deployment)[0]["env"]:
            if SENSITIVE.search(env["name"]):
                assert "secretKeyRef" in env.get("valueFrom", {}), env["name"]
    (config,) = of_kind(objects, "ConfigMap")
    for key, value in config["data"].items():
        assert not SENSITIVE.search(key), key
        assert urlsplit(value).password is None, key


@pytest.fixture(scope="module")
def checkov() -> str:
    """checkov from its own environment (`make tools`), else from PATH."""
    found = shutil.which("checkov", path=str(ROOT / ".tools" / "checkov" / "bin"))
    if not (found or shutil.which("checkov")):
        missing("checkov is not installed (`make tools` installs it)")
    return found or shutil.which("checkov")


def checkov_failures(checkov: str, objects: list[dict], folder: Path) -> list[str]:
    """checkov's failed checks on these objects, with deployments/k8s/.checkov.yaml."""
    path = folder / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    config = str(DEPLOY / "k8s" / ".checkov.yaml")
    result = run(checkov, "--config-file", config, "-f", str(path), "-o", "json")
    report = json.loads(result.stdout)
    assert report["summary"]["resource_count"] >= len(objects), result.stderr  # + their pods
    failed = report["results"]["failed_checks"]
    return [f"{c['check_id']} ({c['check_name']}): {c['resource']}" for c in failed]


@pytest.mark.parametrize("fab", OVERLAYS)
def test_rendered_overlays_pass_the_static_checks(rendered, checkov, fab, tmp_path):
    """Every checkov Kubernetes check but the two skipped in .checkov.yaml, with reasons."""
    failures = checkov_failures(checkov, rendered[fab], tmp_path)
    assert not failures, "\n".join(failures)


def test_the_static_checker_refuses_a_privileged_root_station(rendered, checkov, tmp_path):
    objects = copy.deepcopy(rendered["fab-a"])
    station = component(objects, "StatefulSet", "station")[0]
    station["spec"]["template"]["spec"].pop("securityContext")
    containers(station)[0]["securityContext"] = {"privileged": True, "runAsUser": 0}
    failures = checkov_failures(checkov, objects, tmp_path)
    assert any(f.startswith("CKV_K8S_16 ") for f in failures), failures  # privileged
    assert all("station-1" in f for f in failures), failures  # only the changed one


def test_prometheus_scrapes_every_rendered_station(rendered):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    scraped = {
        (target, group["labels"]["fab"], group["labels"]["station"])
        for group in job["static_configs"]
        for target in group["targets"]
    }
    expected = {
        (
            f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc:{s['spec']['ports'][0]['port']}",
            fab,
            s["spec"]["selector"]["dieguard.io/station"],
        )
        for fab, objects in rendered.items()
        for s in of_kind(objects, "Service")
    }
    assert scraped == expected


def test_argocd_applications_point_at_the_overlays():
    for fab in OVERLAYS:
        app = yaml.safe_load((DEPLOY / "argocd" / f"{fab}.yaml").read_text())
        assert app["kind"] == "Application"
        source = app["spec"]["source"]
        assert source["repoURL"] == "REPO_URL"  # the placeholder of deployments/README.md
        assert source["path"] == f"deployments/k8s/overlays/{fab}"
        overlay = yaml.safe_load((ROOT / source["path"] / "kustomization.yaml").read_text())
        assert app["spec"]["destination"]["namespace"] == overlay["namespace"]


@pytest.mark.parametrize("name", ["service", "worker"])
def test_dockerfiles_install_the_pinned_stack_as_a_user(name):
    text = (DEPLOY / "docker" / f"{name}.Dockerfile").read_text()
    assert "pip install -c constraints.txt ." in text
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert "HEALTHCHECK" in text
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE).group(1))
    if name == "service":
        assert entry[:4] == ["dieguard", "serve", "--host", "0.0.0.0"] and "/healthz" in text
    else:
        project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
        pools = {d["work_pool"]["name"] for d in project["deployments"]}
        assert entry == ["dieguard-entrypoint"]  # without arguments: the process worker
        script = (DEPLOY / "docker" / "worker-entrypoint.sh").read_text()
        assert "exec prefect worker start --pool dieguard-process --type process" in script
        assert "dieguard-process" in pools


def exported_metrics() -> set[str]:
    """Every metric name the service exports, the monitor's figures included."""
    metrics = ServiceMetrics()
    check = {"checked_at": datetime.now(UTC), "value": 1.0}
    check |= {"flagged": True, "skipped": ""}
    names = ("escape_rate", "fpr", "defective_labelled", "good_labelled", "drift_process")
    metrics.monitor.update(dict.fromkeys(names, check))
    metrics.batch_size.labels("champion").observe(1)
    metrics.model_latency.labels("champion").observe(0.01)
    metrics.rejected.labels("400").inc()
    metrics.decisions.labels("good", "1", "champion", "yes").inc()
    metrics.model_changed("champion", None, "1")
    text = metrics.render().decode()
    return set(re.findall(r"^(dieguard_\w+)", text, re.MULTILINE))


def test_rules_and_dashboard_use_only_exported_metrics():
    exported = exported_metrics()
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    dashboard = (DEPLOY / "grafana" / "dieguard.json").read_text()
    used = set(re.findall(r"dieguard_\w+", rules + dashboard)) - {"dieguard_stations"}
    assert used and used <= exported, sorted(used - exported)


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert firing == quiet == names


def test_promtool_checks_the_rules_and_the_config():
    promtool = require("promtool")
    for args in (("check", "rules", "deployments/prometheus/alerts.yml"),
                 ("check", "config", "deployments/prometheus/prometheus.yml")):  # fmt: skip
        result = run(promtool, *args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_runs_the_alert_unit_tests():
    promtool = require("promtool")
    result = run(promtool, "test", "rules", "deployments/prometheus/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboards_queries_parse(tmp_path):
    promtool = require("promtool")
    dashboard = json.loads((DEPLOY / "grafana" / "dieguard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    plain = [e.replace("$fab", ".*").replace("$station", ".*") for e in exprs]
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(plain)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
