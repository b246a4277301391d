"""The weekly retrain: validate, prepare, train, evaluate, gate, register, approve, promote.

Run it once with `dieguard retrain --config configs/cpu.yaml [--auto-approve]`; on a schedule,
as the `weekly-retrain` deployment in prefect.yaml.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.states import Completed, State

from flows.approval import APPROVAL_TIMEOUT_S, automatic_approval, request_approval
from model.config import load_config
from model.gates import failed_checks
from model.remote import is_remote
from tasks import registry
from tasks.data import explore, fetch_data, validate_data
from tasks.registry import promote_version, record_decision
from tasks.release import export_baseline, judge, optimize, score_champion
from tasks.reports import publish_figures, publish_gates, publish_logged_reports, publish_report
from tasks.resume import once_per_run
from tasks.rollout import start_rollout
from tasks.training import evaluate, prepare_data, train

# The registry steps before the approval: a run resumed after it does not repeat them.
current_champion = once_per_run(registry.current_champion)
install_first_champion = once_per_run(registry.install_first_champion)
log_run = once_per_run(registry.log_run)
register_candidate = once_per_run(registry.register_candidate)

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
) -> dict | State:
    """Train a candidate on the configured data set and, when it earns it, make it champion.

    Args:
        config: the run's YAML config.
        overrides: `key=value` changes to the config, e.g. `data_dir=/data/week48` or
            `data_dir=s3://fab-exports/week48` (fetched to a verified local snapshot).
        model_name: the registered model in MLflow.
        tracking_uri: the MLflow store (default: a SQLite file under mlruns/).
        auto_approve: approve without asking (demo and tests); recorded as automatic.
        approval_timeout_s: how long the run waits for a decision (none in time rejects).
        rollout_deployment: e.g. "rollout-start/rollout-start": an approved version is
            handed to the staged rollout (shadow, 10-100%, then promotion or rollback)
            instead of being promoted at once ("": promote at once).
        hold_for_rollout: leave an approved version challenger, for a rollout started
            elsewhere (the demo's simulation rolls it out in-process).
    Returns:
        version, approval, champion, report paths and their logged URIs
        ("logged_reports"); a candidate refused by the release
        gates ends the run in a Completed state named "Refused" holding the same outcome.
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

    if auto_approve:
        decision = automatic_approval()
    else:
        decision = request_approval(
            approval_summary(model_name, version, candidate, verdict, report), approval_timeout_s
        )
    record_decision(model_name, tracking_uri, version, decision.to_dict())
    outcome = {"version": version, "approved": decision.approved, "reports": reports}
    outcome["logged_reports"] = links
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


def approval_summary(model_name: str, version: str, candidate: dict, verdict: dict, report) -> str:
    """The markdown shown above the approval form."""
    t = candidate["test"]
    lines = [
        f"## Approve {model_name} version {version}?",
        f"- test escape rate {t['escape']['rate']:.2%} (95% upper {t['escape']['hi']:.2%}),"
        f" FPR {t['fpr']['rate']:.2%}, macro F1 {t['macro_f1']:.3f}",
        f"- release gates: {'all passed' if verdict['passed'] else 'FAILED'}",
        f"- evaluation report (errors, fairness): `{report['html']}`",
        "Tick every checklist item and give your name to approve; anything less rejects.",
    ]
    return "\n".join(lines)
