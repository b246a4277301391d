"""The weekly retrain: validate, prepare, train, evaluate, gate, register, approve, promote.

Run it once with `dieguard retrain --config configs/cpu.yaml [--auto-approve]`: it pauses
for the approval form in its process. On a schedule, as the `weekly-retrain` deployment in
prefect.yaml, it ends once the candidate is registered and hands the approval to a run of
the `approve-candidate` deployment (flows/approve_candidate.py), which waits outside the
retrain's concurrency slot.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.states import Completed, State

from flows.approval import (
    APPROVAL_TIMEOUT_S,
    approval_summary,
    automatic_approval,
    from_deployment,
    request_approval,
)
from model.config import load_config
from model.gates import failed_checks
from model.remote import is_remote
from tasks.approval import start_approval
from tasks.data import explore, fetch_data, validate_data
from tasks.registry import (
    current_champion,
    install_first_champion,
    log_run,
    promote_version,
    record_decision,
    register_candidate,
)
from tasks.release import export_baseline, judge, optimize, score_champion
from tasks.reports import publish_figures, publish_gates, publish_logged_reports, publish_report
from tasks.rollout import start_rollout
from tasks.training import evaluate, prepare_data, train

APPROVAL_DEPLOYMENT = "approve-candidate/approve-candidate"
REPORT_KEYS = {"data_docs": "data-docs", "eda": "eda", "evaluation": "evaluation-report"}
REFUSED = "Refused"  # the final state of a run whose candidate the release gates turned away


@flow(name="weekly-retrain", log_prints=True, persist_result=True)
def retrain(
    config: str = "configs/cpu.yaml",
    overrides: list[str] | None = None,
    model_name: str = "dieguard",
    tracking_uri: str | None = None,
    auto_approve: bool = False,
    approval_timeout_s: int = APPROVAL_TIMEOUT_S,
    rollout_deployment: str = "",
    hold_for_rollout: bool = False,
    approval_deployment: str = APPROVAL_DEPLOYMENT,
) -> dict | State:
    """Train a candidate on the configured data set and, when it earns it, make it champion.

    Args:
        config: the run's YAML config.
        overrides: `key=value` changes to the config, e.g. `data_dir=/data/week48` or
            `data_dir=s3://fab-exports/week48` (fetched to a verified local snapshot).
        model_name: the registered model in MLflow.
        tracking_uri: the MLflow store (default: a SQLite file under mlruns/).
        auto_approve: approve without asking (demo and tests); recorded as automatic.
        approval_timeout_s: how long the approval waits for a decision (none in time rejects).
        rollout_deployment: e.g. "rollout-start/rollout-start": an approved version is
            handed to the staged rollout (shadow, 10-100%, then promotion or rollback)
            instead of being promoted at once ("": promote at once).
        hold_for_rollout: leave an approved version challenger, for a rollout started
            elsewhere (the demo's simulation rolls it out in-process).
        approval_deployment: from a deployment (and without auto_approve), the approval
            is a run of this deployment (`<flow>/<deployment>`), given the version,
            approval_timeout_s and rollout_deployment ("" when hold_for_rollout); it
            approves into the rollout or holds, never promotes at once.
    Returns:
        version, approval, champion, report paths and their logged URIs
        ("logged_reports"); from a deployment, "approval_run" (the approval's run id)
        instead of the decision. A candidate refused by the release gates ends the run in a
        Completed state named "Refused" holding the same outcome.
    """
    log = get_run_logger()
    cfg = load_config(config, overrides)
    if is_remote(cfg.data_dir):  # s3://bucket/prefix: its verified local snapshot from here on
        cfg = fetch_data(cfg)
    run = Path(cfg.out_dir) / cfg.name
    validation = validate_data(cfg.data_dir, run / "validation")
    docs = validation["docs_index"]
    publish_report(docs, REPORT_KEYS["data_docs"], "Great Expectations Data Docs")
    eda = explore(cfg.data_dir, run / "eda")
    publish_report(eda, REPORT_KEYS["eda"], "Exploratory data analysis of the training split")
    data = prepare_data(cfg, run / "prepared")

    baseline = train("baseline", data, cfg, run / "baseline")
    candidate = train("multimodal", data, cfg, run / "multimodal")
    report = evaluate(candidate["model_path"], run / "evaluation", baseline["model_path"])
    publish_report(report["html"], REPORT_KEYS["evaluation"], "Evaluation, errors and fairness")
    deployment = optimize(candidate["model_path"], data, run / "deploy", cfg.gates)

    champion = current_champion(model_name, tracking_uri, run / "champion")
    if champion is None:  # the first run: the existing CNN becomes the champion to beat
        bundle = export_baseline(baseline["model_path"], data.folder, run / "baseline_bundle")
        champion = install_first_champion(
            model_name, tracking_uri, cfg, bundle, baseline, validation, data
        )
    champion_figures = score_champion(champion["bundle"], cfg)
    verdict = judge(candidate["test"], deployment, cfg.gates, champion_figures, run)
    publish_figures({"candidate": candidate, "vision-only baseline": baseline})
    publish_gates(verdict)
    reports = {"data_docs": docs, "eda": eda, "evaluation": report["html"]}
    logged = {name: str(Path(path).parent) for name, path in reports.items()}
    training = log_run(
        tracking_uri, model_name, cfg, data, {"baseline": baseline, "multimodal": candidate},
        deployment, logged | {"release_gates": verdict["path"]},
    )  # fmt: skip
    links = publish_logged_reports(tracking_uri, training["run_id"], reports, REPORT_KEYS)
    if not verdict["passed"]:
        kept = {"reports": reports, "logged_reports": links, "champion": champion["version"]}
        return refused(model_name, verdict, kept)
    version = register_candidate(
        model_name, tracking_uri, training, data, validation, candidate, verdict, champion,
        champion_figures,
    )  # fmt: skip

    outcome = {"version": version, "reports": reports, "logged_reports": links}
    if not auto_approve and from_deployment():  # the approval waits outside this run's slot
        rollout = "" if hold_for_rollout else rollout_deployment
        run_id = start_approval(
            approval_deployment, model_name, tracking_uri, version, approval_timeout_s, rollout
        )
        log.info("version %s is challenger; approval run %s waits for its form", version, run_id)
        return outcome | {"approval_run": run_id, "champion": champion["version"]}
    if auto_approve:
        decision = automatic_approval()
    else:
        test, passed = candidate["test"], verdict["passed"]
        summary = approval_summary(model_name, version, test, passed, report["html"])
        decision = request_approval(summary, approval_timeout_s)
    record_decision(model_name, tracking_uri, version, decision.to_dict())
    outcome["approved"] = decision.approved
    if not decision.approved:
        log.warning("version %s rejected by %s: %s", version, decision.approver, decision.reason)
        return outcome | {"champion": champion["version"]}
    if rollout_deployment:  # production: shadow, then staged traffic, then promotion
        run_id = start_rollout(rollout_deployment, model_name, tracking_uri, version)
        return outcome | {"champion": champion["version"], "rollout": run_id}
    if hold_for_rollout:
        log.info("version %s approved: challenger until a rollout promotes it", version)
        return outcome | {"champion": champion["version"]}
    why = f"approved by {decision.approver}"
    promote_version(model_name, tracking_uri, version, why, champion["version"])
    return outcome | {"champion": version}


def refused(model_name: str, verdict: dict, outcome: dict) -> State:
    """The run's end when the gates refuse the candidate: its own state and event."""
    failed = failed_checks(verdict)
    message = "release gates refused the candidate: " + "; ".join(failed)
    get_run_logger().warning(message)
    emit_event(
        "dieguard.retrain.refused",
        resource={"prefect.resource.id": f"dieguard.model.{model_name}"},
        payload={"failed": failed, "verdict": verdict["path"]},
    )
    return Completed(name=REFUSED, message=message, data=outcome | {"refused": message})
