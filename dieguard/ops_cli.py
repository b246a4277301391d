"""Production commands: the staged rollout of a challenger, the hourly monitor, and a
compressed-clock simulation of both against a running service."""

from __future__ import annotations

import json

import click
from mlflow.exceptions import MlflowException

from dieguard.service_cli import MODEL_NAME, TRACKING

LOG_URL = click.option(
    "--log-url",
    envvar="DIEGUARD_DATABASE_URL",
    default="sqlite:///runs/service/inspections.db",
    show_default=True,
    help="The inspection log's database.",
)

REFERENCE_DIR = click.option(
    "--reference-dir",
    default=None,
    help="A split folder to judge drift against (default: the champion's training split, "
    "from its lineage in the registry).",
)


@click.group()
def rollout() -> None:
    """The staged rollout of a challenger: start, step, status, stop."""


@rollout.command(name="start", context_settings={"ignore_unknown_options": True})
@click.option(
    "--version", "version", default=None, help="Version to roll out (default: challenger)."
)
@click.option("--config", "config_path", type=click.Path(exists=True), default=None,
              help="YAML of rollout settings (windows, stages, gates).")  # fmt: skip
@MODEL_NAME
@TRACKING
@click.argument("overrides", nargs=-1)
def rollout_start(version, config_path, model_name, tracking_uri, overrides) -> None:
    """Put the challenger in shadow beside the champion; `rollout step` runs take it on to
    10/25/50/100% of the dies, then promote it or roll it back.

    Overrides are `key=value` rollout settings, e.g. `stage_window_s=60`; they are kept in
    the rollout state for every step. Exits 4 when the version may not serve (not approved,
    rejected, rolled back, gates failed), naming the reason.
    """
    from flows.rollout import rollout_start as start_flow
    from monitoring.rollout import load_rollout_config
    from monitoring.rollout_step import RolloutInProgressError
    from registry import CHALLENGER, NotServable, open_store, require_servable, resolve

    client = open_store(tracking_uri).client
    try:
        load_rollout_config(config_path, list(overrides))  # bad settings: before a flow run
        target = str(resolve(client, model_name, version or CHALLENGER).version)
        require_servable(client, model_name, target)
        state = start_flow(model_name, tracking_uri, target, config_path, list(overrides))
    except NotServable as err:
        click.echo(f"Error: {err}", err=True)
        raise SystemExit(4) from err
    except MlflowException as err:
        raise click.ClickException(f"{model_name} {version or CHALLENGER}: {err.message}") from err
    except (RolloutInProgressError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"version {state['version']}: {state['stage']} beside champion "
               f"{state['champion']}; the rollout-step runs advance it")  # fmt: skip


@rollout.command(name="step")
@MODEL_NAME
@TRACKING
@LOG_URL
def rollout_step(model_name, tracking_uri, log_url) -> None:
    """Take one step of the rollout in progress now (what the rollout-step deployment runs).

    Exits 3 when the step rolled the challenger back.
    """
    from flows.rollout import rollout_step as step_flow

    step = step_flow(model_name=model_name, tracking_uri=tracking_uri, log_url=log_url)
    if step["action"] == "idle":
        click.echo(f"nothing to do: {step['reason']}")
        return
    now_in = f"; now in {step['now_in']}" if step["now_in"] else ""
    click.echo(f"version {step['version']}, {step['stage']}: {step['action']}{now_in} "
               f"({step['reason']})")  # fmt: skip
    if step["action"] == "rolled-back":
        raise SystemExit(3)


@rollout.command(name="status")
@MODEL_NAME
@TRACKING
def rollout_status(model_name, tracking_uri) -> None:
    """The rollout in progress (version, mode, share, stage, since, reason), if any."""
    from registry import open_store
    from registry.rollout_state import rollout_state

    state = rollout_state(open_store(tracking_uri).client, model_name)
    click.echo(json.dumps(state, indent=2, default=str) if state else "no rollout in progress")


@rollout.command(name="stop")
@click.option("--reason", required=True, help="Why: recorded on the version.")
@MODEL_NAME
@TRACKING
def rollout_stop(reason, model_name, tracking_uri) -> None:
    """Stop the rollout now: the champion alone serves again; steps find nothing to do."""
    from registry import open_store
    from registry.rollout_state import clear_rollout, rollout_state

    client = open_store(tracking_uri).client
    if rollout_state(client, model_name) is None:
        raise click.ClickException("no rollout in progress")
    clear_rollout(client, model_name, f"stopped by an operator: {reason}")
    click.echo("rollout stopped; the champion serves every die")


@click.command()
@click.argument("model_name")
@click.argument("version")
@click.option("--reason", required=True, help="Why: recorded on the version.")
@click.option(
    "--approver",
    envvar=["DIEGUARD_APPROVER", "USER"],
    required=True,
    help="Your name or badge id (recorded; default: $DIEGUARD_APPROVER, $USER).",
)
@TRACKING
def reject(model_name, version, reason, approver, tracking_uri) -> None:
    """Reject MODEL_NAME VERSION: it loses the challenger alias and may never serve."""
    from registry import open_store
    from registry import reject as reject_version
    from registry.model_card import write_model_card

    client = open_store(tracking_uri).client
    try:
        reject_version(client, model_name, version, approver, reason)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    except MlflowException as err:
        raise click.ClickException(f"{model_name} version {version}: {err.message}") from err
    write_model_card(client, model_name, version)
    click.echo(f"{model_name} version {version} rejected by {approver}: {reason}")


@click.command(context_settings={"ignore_unknown_options": True})
@LOG_URL
@click.option("--image-store", default="runs/service/images", show_default=True)
@REFERENCE_DIR
@click.option("--similar-uri", default="runs/service/similar", show_default=True)
@click.option("--model-version", default=None, help="Whose embeddings (default: most served).")
@click.option("--report-dir", default="runs/monitor", show_default=True)
@click.option("--no-retrain", is_flag=True, help="Report sustained drift, start no retrain.")
@MODEL_NAME
@TRACKING
@click.argument("thresholds", nargs=-1)
def monitor(log_url, image_store, reference_dir, similar_uri, model_version, report_dir,
            no_retrain, model_name, tracking_uri, thresholds) -> None:  # fmt: skip
    """One monitoring check now: 24 h figures and alerts, the last hour's drift, the trigger.

    Thresholds are `key=value` monitor settings, e.g. `max_fpr=0.2`.
    """
    from flows.monitor import RETRAIN_DEPLOYMENT
    from flows.monitor import monitor as monitor_flow

    changes = {}
    for item in thresholds:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"{item!r} is not key=value")
        changes[key] = float(value)
    result = monitor_flow(
        log_url=log_url,
        image_store=image_store,
        reference_dir=reference_dir,
        model_name=model_name,
        tracking_uri=tracking_uri,
        similar_uri=similar_uri,
        model_version=model_version,
        report_dir=report_dir,
        thresholds=changes or None,
        retrain_deployment="" if no_retrain else RETRAIN_DEPLOYMENT,
    )
    click.echo(json.dumps({k: result[k] for k in ("alerts", "drifted", "sustained", "retrain")},
                          default=str))  # fmt: skip
    for name, path in result["reports"].items():
        click.echo(f"  {name:10s} {path}")


@click.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True)
@click.option("--station-key", envvar="DIEGUARD_STATION_KEY")
@click.option("--operator-key", envvar="DIEGUARD_OPERATOR_KEY")
@click.option("--serve", is_flag=True,
              help="Serve the registry's champion in this process (its log and images under "
                   "REPORT_DIR/service) instead of posting to --url with the keys.")  # fmt: skip
@click.option("--clean", "clean_dir", type=click.Path(exists=True), required=True,
              help="A labelled split streamed before the drift.")  # fmt: skip
@click.option("--drifted", "drifted_dir", type=click.Path(exists=True), required=True,
              help="A labelled split streamed from --drift-at on.")  # fmt: skip
@click.option("--hours", default=12, show_default=True, help="Simulated hours.")
@click.option("--drift-at", default=4, show_default=True, help="Hour the drift begins.")
@click.option("--rate", default=40, show_default=True, help="Dies per simulated hour.")
@click.option("--hour-s", default=5.0, show_default=True, help="Real seconds per hour.")
@click.option("--feedback-delay", default=1.0, show_default=True, help="Hours to a label.")
@LOG_URL
@click.option("--image-store", default="runs/service/images", show_default=True)
@REFERENCE_DIR
@click.option("--report-dir", default="runs/simulate", show_default=True)
@click.option("--retrain-deployment", default="", help="Start it on sustained drift.")
@click.option("--rollout-challenger", is_flag=True,
              help="First roll the approved challenger out beside the champion (shadow, "
                   "10-100%, promotion) on a defect-rich stream, under demo gates.")  # fmt: skip
@click.option("--bad-challenger", is_flag=True,
              help="Then roll out a challenger that passes every die.")  # fmt: skip
@MODEL_NAME
@TRACKING
def simulate(url, station_key, operator_key, serve, clean_dir, drifted_dir, hours, drift_at,
             rate, hour_s, feedback_delay, log_url, image_store, reference_dir, report_dir,
             retrain_deployment, rollout_challenger, bad_challenger, model_name,
             tracking_uri) -> None:  # fmt: skip
    """Production on a compressed clock: optionally the approved challenger's rollout, then
    a drift and the hourly monitor's verdicts, then optionally a bad challenger's rollout
    (exits 3 unless it is rolled back)."""
    from monitoring.simulate import simulate_drift
    from monitoring.simulate_rollout import (
        approved_challenger,
        format_events,
        promotion_overrides,
        simulate_bad_challenger,
        simulate_rollout,
    )
    from service.embedded import ServiceNotReadyError, start_embedded

    if serve:
        try:
            embedded = start_embedded(model_name, tracking_uri, f"{report_dir}/service")
        except ServiceNotReadyError as err:
            raise click.ClickException(
                f"{err}: is there a champion of {model_name!r}? `make demo` registers one"
            ) from err
        url, station_key, operator_key = embedded.url, embedded.station_key, embedded.operator_key
        log_url, image_store = embedded.config.log_url, str(embedded.config.state_dir / "images")
        click.echo(f"service on {url} (log {log_url})")
    elif not (station_key and operator_key):
        raise click.UsageError("give --station-key and --operator-key, or --serve")
    try:
        service = (url, station_key, operator_key)
        version = rollout_challenger and approved_challenger(tracking_uri, model_name)
        if version:
            click.echo(f"rolling out approved challenger version {version}")
            result = simulate_rollout(
                *service, clean_dir, tracking_uri, model_name, log_url, version, 4 * hours,
                rate, hour_s, feedback_delay, promotion_overrides(hour_s), rich=True,
            )  # fmt: skip
            click.echo(f"challenger version {version}: {result['outcome']} ({result['reason']})")
            click.echo(format_events(result["events"]))
        elif rollout_challenger:
            click.echo("no approved challenger waiting for a rollout")
        timeline = simulate_drift(
            *service, clean_dir, drifted_dir, log_url, reference_dir, image_store, report_dir,
            hours, drift_at, rate, hour_s, feedback_delay, retrain_deployment=retrain_deployment,
            model_name=model_name, tracking_uri=tracking_uri,
        )  # fmt: skip
        click.echo(timeline.format())
        if not bad_challenger:
            return
        result = simulate_bad_challenger(
            *service, clean_dir, tracking_uri, model_name, log_url, f"{report_dir}/bundles",
            hours, rate, hour_s, feedback_delay,
        )  # fmt: skip
    finally:
        if serve:
            embedded.stop()
    click.echo(f"bad challenger version {result['version']}: {result['outcome']} "
               f"({result['reason']})")  # fmt: skip
    click.echo(format_events(result["events"]))
    if result["outcome"] != "rolled-back":
        raise SystemExit(3)


COMMANDS = (rollout, reject, monitor, simulate)
