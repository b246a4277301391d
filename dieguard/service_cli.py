"""The service's commands: serve, loadtest, index-similar, export-feedback, hash-key,
copy-images."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import click

STATE_DIR = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DIEGUARD_STATE_DIR",
    default="runs/service",
    show_default=True,
    help="Bundles, images, the SQLite inspection log and the similar-defect index.",
)
MODEL_NAME = click.option("--model-name", envvar="DIEGUARD_MODEL_NAME", default="dieguard")
TRACKING = click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="MLflow store (default: mlruns/mlflow.db here; env MLFLOW_TRACKING_URI).",
)
DATABASE = click.option(
    "--database-url",
    envvar="DIEGUARD_DATABASE_URL",
    default=None,
    help="Inspection log (default: SQLite in the state dir; postgresql://... in production).",
)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--bundle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Serve this bundle folder instead of the registry's champion.",
)
@MODEL_NAME
@TRACKING
@STATE_DIR
@DATABASE
def serve(host, port, bundle, model_name, tracking_uri, state_dir, database_url) -> None:
    """Run the inspection service (API, dashboard, metrics) under uvicorn.

    Keys come from DIEGUARD_API_KEYS ("role:name:key,..."; roles station, operator, admin)
    or DIEGUARD_API_KEYS_FILE; other settings from DIEGUARD_* variables (service.config).
    """
    import uvicorn

    from service.app import create_app

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from service.config import from_env

    options = {"model_name": model_name, "tracking_uri": tracking_uri, "bundle": bundle}
    options |= {"state_dir": state_dir, "database_url": database_url}
    config = from_env(**{k: v for k, v in options.items() if v is not None})
    if not config.keys:
        raise click.UsageError(
            "no API keys: set DIEGUARD_API_KEYS, e.g. "
            "'station:station-1:<key>,operator:<name>:<key>,admin:<name>:<key>'"
        )
    click.echo(f"dieguard service on http://{host}:{port} (dashboard /dashboard, docs /docs)")
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        limit_concurrency=config.max_connections,  # past it uvicorn answers 503
        timeout_graceful_shutdown=10,
    )


@click.command(name="hash-key")
@click.option("--role", type=click.Choice(["station", "operator", "admin"]), required=True)
@click.option("--name", required=True, help="Who holds the key, e.g. station-3 or j.doe.")
@click.option("--key", prompt=True, hide_input=True, help="The key (asked for when not given).")
def hash_key(role, name, key) -> None:
    """Print a keys-file entry holding the key's digest under DIEGUARD_KEY_SECRET, not the key."""
    from service.config import key_secret
    from service.keys import HASHED, key_digest

    secret = key_secret(os.environ)
    if not secret:
        raise click.UsageError("set DIEGUARD_KEY_SECRET: the server secret the digest is under")
    click.echo(f"{role}:{name}:{HASHED}{key_digest(secret, key)}")


@click.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True)
@click.option("--key", envvar="DIEGUARD_STATION_KEY", help="A station key (not with --serve).")
@click.option("--serve", "serve_it", is_flag=True,
              help="Start the service for the run (the registry's champion, or --bundle), "
                   "then count the acknowledged inspections missing from its log.")  # fmt: skip
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="With --serve: serve this bundle folder.")  # fmt: skip
@STATE_DIR
@click.option("--rate", "rates", type=float, multiple=True, default=(5.0,), show_default=True,
              help="Dies per second; several with --find-max.")  # fmt: skip
@click.option("--duration", type=float, default=30.0, show_default=True, help="Seconds a rate.")
@click.option("--stations", type=int, default=5, show_default=True)
@click.option("--find-max", is_flag=True, help="Step up the rates until p99 breaks the limit.")
@click.option("--p99-limit-ms", type=float, default=200.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def loadtest(url, key, serve_it, bundle, state_dir, rates, duration, stations, find_max,
             p99_limit_ms, as_json) -> None:  # fmt: skip
    """Post generated dies at a set rate from several stations; report throughput and p99."""
    from service.loadtest import format_table, load_test, make_dies, max_rate

    if serve_it:
        return _served_load_test(bundle, state_dir, list(rates), duration, stations, p99_limit_ms)
    if not key:
        raise click.UsageError("give a station key (--key or DIEGUARD_STATION_KEY), or --serve")
    dies = make_dies(64)
    if find_max:
        best, reports = max_rate(url, key, list(rates), duration, stations=stations,
                                 p99_limit_ms=p99_limit_ms, dies=dies)  # fmt: skip
    else:
        reports = [load_test(url, key, r, duration, stations=stations, dies=dies) for r in rates]
        best = max((r.rate for r in reports if r.meets(p99_limit_ms)), default=None)
    if as_json:
        click.echo(json.dumps({"best_rate": best, "reports": [r.as_dict() for r in reports]}))
        return
    click.echo(format_table(reports, p99_limit_ms))
    verdict = f"{best:g} dies/s" if best is not None else "none of the rates"
    click.echo(f"highest rate with p99 under {p99_limit_ms:g} ms and no errors: {verdict}")


def _served_load_test(bundle, state_dir, rates, duration, stations, p99_limit_ms) -> None:
    """The load test against a service started for it; the highest rates under 100 ms and
    under `p99_limit_ms`, and the acknowledged inspections missing from the log."""
    from service.loadtest import format_table
    from service.server_process import served_max_rate

    run_dir = state_dir / "loadtest"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    reports, acknowledged, missing = served_max_rate(
        bundle, run_dir, rates, duration, stations, max(p99_limit_ms, 100.0)
    )
    click.echo(format_table(reports, p99_limit_ms))
    for limit in sorted({100.0, p99_limit_ms}):
        best = max((r.rate for r in reports if r.meets(limit)), default=None)
        verdict = f"{best:g} dies/s" if best is not None else "none of the rates"
        click.echo(f"highest rate with p99 under {limit:g} ms and no errors: {verdict}")
    click.echo(f"acknowledged but missing from the log: {len(missing)} of {len(acknowledged)}")


@click.command(name="index-similar")
@click.option("--data-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="train", show_default=True)
@click.option("--version", "ref", default="champion", show_default=True,
              help="Model version or alias whose embeddings to index.")  # fmt: skip
@MODEL_NAME
@TRACKING
@STATE_DIR
def index_similar(data_dir, split, ref, model_name, tracking_uri, state_dir) -> None:
    """Index a labelled split's embeddings for the similar-defect search of one model."""
    from registry import download_bundle, open_store, resolve
    from service.config import from_env
    from service.similar import SimilarDefects, index_split

    client = open_store(tracking_uri).client
    version = str(resolve(client, model_name, ref).version)
    bundle = state_dir / "bundles" / model_name / f"v{version}"
    download_bundle(client, model_name, version, bundle)
    config = from_env(state_dir=state_dir, model_name=model_name)
    similar = SimilarDefects(config.similar_location)
    count = index_split(similar, bundle, data_dir, split, version)
    click.echo(f"indexed {count} dies of {split} for {model_name} v{version}")


@click.command(name="export-feedback")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--since", default=None, help="Only feedback given after this ISO time.")
@STATE_DIR
@DATABASE
def export_feedback(out_dir, since, state_dir, database_url) -> None:
    """Write the confirmed and overridden dies as a labelled split (the retraining queue)."""
    from datetime import datetime

    from service.config import from_env
    from service.feedback_export import export_feedback as export
    from service.image_store import open_image_store
    from service.inspection_log import InspectionLog

    settings = {"state_dir": state_dir} | ({"database_url": database_url} if database_url else {})
    config = from_env(**settings)  # the images: DIEGUARD_IMAGE_STORE, else in the state folder
    log = InspectionLog(config.log_url)
    when = datetime.fromisoformat(since) if since else None
    summary = export(log, open_image_store(config.image_location), out_dir, since=when)
    click.echo(json.dumps(summary if isinstance(summary, dict) else vars(summary), default=str))


@click.command(name="copy-images")
@click.option(
    "--to",
    "target",
    required=True,
    help="The store to fill: s3://bucket/prefix, or a folder.",
)
@STATE_DIR
def copy_images(target, state_dir) -> None:
    """Copy the images stored in the state folder into another store, each verified by its
    content hash; before pointing DIEGUARD_IMAGE_STORE at S3, so old records keep their
    images. Safe to run again. Exit status 1 when a stored image does not match its name."""
    from service.image_store import ImageStore, open_image_store
    from service.image_store import copy_images as copy

    source = state_dir / "images"
    if not source.is_dir():
        raise click.ClickException(f"no image store at {source}")
    summary = copy(ImageStore(source), open_image_store(target))
    click.echo(json.dumps(summary))
    if summary["corrupt"]:
        raise SystemExit(1)


COMMANDS = (serve, loadtest, index_similar, export_feedback, hash_key, copy_images)
