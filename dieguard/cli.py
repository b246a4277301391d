"""The `dieguard` command line: one sub-command per platform job."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

MODEL = click.argument("model_path", type=click.Path(exists=True, dir_okay=False))
OUT = click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))


def data_dir_option(help_text: str):
    """The --data-dir option shared by the commands that read a data set."""
    return click.option("--data-dir", type=click.Path(exists=True, file_okay=False), help=help_text)


# Set before Prefect is first imported, unless the user set them: a fab's machines reach no
# outside endpoint, and on a first start the local server's usage telemetry can log a
# "database is locked" traceback; that first start also builds the server's database,
# which on a busy machine takes longer than Prefect's 20 s wait.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


@click.group()
def main() -> None:
    """dieguard: multimodal inline die inspection."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # not per download
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--n", "n", type=int, default=2000, show_default=True, help="Dies in all splits.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--val-n", type=int, default=None, help="Validation dies (default 20%).")
@click.option("--test-n", type=int, default=None, help="Test dies (default 20%).")
@click.option(
    "--drift",
    default="none",
    show_default=True,
    help="Production change to simulate: none, recipe, notes, illumination.",
)
@click.option("--workers", type=int, default=None, help="Rendering processes (default: cores).")
@click.option(
    "--randomize",
    is_flag=True,
    help="Simulate a fab of its own, drawn from --seed (layouts, optics, defect looks, which "
    "parameters each class moves, note wording), instead of the demo fab.",
)
@click.option(
    "--holdout",
    is_flag=True,
    help="With --randomize: test dies deviate by other process parameters than train and "
    "val dies (6 root causes, 3 and 3).",
)
@click.option(
    "--audit",
    "audit_dir",
    type=click.Path(file_okay=False),
    help="Run the signal audit on this data set (after generating, if --out names it).",
)
def synth(out_dir, n, seed, val_n, test_n, drift, workers, randomize, holdout, audit_dir):
    """Generate a synthetic data set in the dataset contract, or audit one."""
    from model.synthetic.generate import generate_dataset
    from model.synthetic.world import draw_world

    if not out_dir and not audit_dir:
        raise click.UsageError("give --out to generate, --audit to audit, or both")
    if out_dir:
        started = time.perf_counter()
        if holdout and not randomize:
            raise click.UsageError("--holdout draws a fab of its own: give --randomize too")
        world = draw_world(seed, holdout) if randomize else None
        plan = generate_dataset(out_dir, n, seed, val_n, test_n, drift, workers, world)
        sizes = plan.groupby("split").size().to_dict()
        seconds = time.perf_counter() - started
        click.echo(f"wrote {len(plan)} dies to {out_dir} {sizes} in {seconds:.1f}s")
    if audit_dir:
        from model.synthetic.audit import format_audit, signal_audit

        result = signal_audit(audit_dir)
        Path(audit_dir, "signal_audit.json").write_text(json.dumps(result, indent=2))
        click.echo(format_audit(result))


@main.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--split", "splits", multiple=True, default=("train",), show_default=True)
def explore(data_dir, out_dir, splits) -> None:
    """Write the exploratory report (six views and one HTML page) of a data set."""
    from model.explore import explore_dataset

    summary = explore_dataset(data_dir, out_dir, splits=tuple(splits))
    click.echo(f"EDA report: {Path(out_dir) / 'eda.html'} ({summary['n_dies']} dies)")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", required=True, type=click.Path(exists=True))
@click.option("--kind", type=click.Choice(["baseline", "multimodal", "both"]), default="both")
@click.argument("overrides", nargs=-1)
def train(config_path, kind, overrides) -> None:
    """Train the baseline and/or the multimodal model; print their test figures."""
    from model.config import load_config
    from model.report import train_and_report

    cfg = load_config(config_path, list(overrides))
    train_and_report(cfg, ("baseline", "multimodal") if kind == "both" else (kind,))


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", required=True, type=click.Path(exists=True))
@click.option("--train-data", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--eval-data", multiple=True, required=True,
              type=click.Path(exists=True, file_okay=False),
              help="A held-out data set whose test split is scored (repeatable).")  # fmt: skip
@click.option("--kind", type=click.Choice(["baseline", "multimodal"]), default="multimodal")
@click.argument("overrides", nargs=-1)
def generalize(config_path, train_data, eval_data, kind, overrides) -> None:
    """Train once on one data set; gates, catch rates and no-notes figures on each other."""
    from model.config import load_config
    from model.generalize import format_report
    from model.generalize import generalize as run_generalize

    cfg = load_config(config_path, list(overrides))
    click.echo(format_report(run_generalize(cfg, train_data, list(eval_data), kind)))


@main.command()
@MODEL
@OUT
@data_dir_option("Data set to evaluate on (default: the one the model was trained on).")
@click.option(
    "--baseline",
    "baseline_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Vision-only model to compare on the same dies.",
)
@click.option("--split", default="test", show_default=True)
@click.option("--device", default="auto", show_default=True)
def evaluate(model_path, out_dir, data_dir, baseline_path, split, device) -> None:
    """Evaluate a trained model: metrics, error analysis and fairness audit, one report."""
    from model.evaluation_job import run_evaluation

    s = run_evaluation(
        model_path,
        out_dir,
        data_dir=data_dir,
        baseline_path=baseline_path,
        split=split,
        device=device,
    )
    e, f = s["escape"], s["fpr"]
    click.echo(
        f"escape {e['rate']:.2%} (95% upper {e['hi']:.2%}, {e['k']}/{e['n']})  "
        f"FPR {f['rate']:.2%} ({f['k']}/{f['n']})  macro F1 {s['macro_f1']:.3f}"
    )
    for line in s["warnings"]:
        click.echo(f"warning: {line}")
    click.echo(f"report: {s['html']}\nnumbers: {s['json']}")


@main.command()
@MODEL
@OUT
@data_dir_option("Dies for calibration and parity (default: the training data).")
def export(model_path, out_dir, data_dir) -> None:
    """ONNX export, three INT8 variants, parity and gate verdicts (int8_gate.json)."""
    from model.checkpoint import load_trained
    from model.deploy import optimize_for_deployment

    data = data_dir or load_trained(model_path)[1].data_dir
    verdict = optimize_for_deployment(model_path, data, out_dir)
    for name, g in verdict["gates"].items():
        click.echo(
            f"{name:14s} {'pass' if g['passed'] else 'FAIL'}  flips {g['flip_rate']['rate']:.2%}"
            f"  escape {g['escape']['rate']:.2%}  FPR {g['fpr']['rate']:.2%}"
        )
    click.echo(f"shipped: {verdict['chosen']} -> {verdict['artifact']}")


@main.command()
@MODEL
@data_dir_option("Real dies to time (default: random inputs of the right shape).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False))
@click.option(
    "--onnx-dir",
    type=click.Path(exists=True, file_okay=False),
    help="Reuse model.onnx / model.static_qdq.onnx / model.dynamic.onnx from export (those "
    "missing, as after a retrain that shipped static INT8, are made here).",
)
@click.option("--iters", type=int, default=50, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
def bench(model_path, data_dir, out_dir, onnx_dir, iters, threads) -> None:
    """Latency of PyTorch eager, ONNX Runtime FP32 and INT8, pre- and post-processing."""
    from model.bench import benchmark

    names = {
        "onnx_fp32": "model.onnx",
        "onnx_int8_static": "model.static_qdq.onnx",
        "onnx_int8_dynamic": "model.dynamic.onnx",
    }
    found = {k: Path(onnx_dir) / v for k, v in names.items()} if onnx_dir else {}
    paths = {k: path for k, path in found.items() if path.exists()}
    result = benchmark(
        model_path, data_dir, iters=iters, threads=threads, out_dir=out_dir, onnx_paths=paths
    )
    click.echo(result["table"])


TRACKING = click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="MLflow store (default: mlruns/mlflow.db here; env MLFLOW_TRACKING_URI).",
)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", default="configs/cpu.yaml", show_default=True)
@click.option("--model-name", default="dieguard", show_default=True)
@TRACKING
@click.option("--auto-approve", is_flag=True, help="Approve without asking (recorded as such).")
@click.option("--hold-for-rollout", is_flag=True,
              help="Leave the approved version challenger, for a staged rollout (`dieguard "
                   "simulate --rollout-challenger`), instead of promoting it.")  # fmt: skip
@click.argument("overrides", nargs=-1)
def retrain(config_path, model_name, tracking_uri, auto_approve, hold_for_rollout,
            overrides) -> None:  # fmt: skip
    """Run the weekly retrain flow once, here; print its reports and the new version's audit.

    Exits 2 when the release gates refused the candidate (the champion stays).
    """
    from flows.retrain import REFUSED
    from flows.retrain import retrain as retrain_flow
    from registry import audit, champion, format_audit, open_store

    started = time.perf_counter()
    state = retrain_flow(
        config_path,
        list(overrides),
        model_name=model_name,
        tracking_uri=tracking_uri,
        auto_approve=auto_approve,
        hold_for_rollout=hold_for_rollout,
        return_state=True,
    )
    result = state.result()  # raises the run's error when it failed
    refused = result.get("refused") if state.name == REFUSED else None
    minutes = (time.perf_counter() - started) / 60
    click.echo(f"\nretrain finished in {minutes:.1f} min")
    if refused:
        from model.config import load_config

        cfg = load_config(config_path, list(overrides))
        click.echo(f"the candidate was NOT registered: {refused}")
        click.echo(f"  reports and verdicts under {Path(cfg.out_dir) / cfg.name}")
    else:
        click.echo(f"version {result['version']} approved: {result['approved']}")
    for name, path in result.get("reports", {}).items():
        click.echo(f"  {name:12s} {path}")
    click.echo("  runs, registry and approvals in the UIs: make ui")
    client = open_store(tracking_uri).client
    current = champion(client, model_name)
    shown = result.get("version") or (current and current.version)
    if shown is not None:
        click.echo("\n" + format_audit(audit(client, model_name, shown)))
    if refused:
        raise SystemExit(2)


@main.command(name="explain-audit")
@click.option("--data-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A synthetic data set (its synth_truth.csv records the causes).")  # fmt: skip
@click.option("--bundle", type=click.Path(exists=True, file_okay=False),
              help="A serving bundle folder (default: the registry's champion).")  # fmt: skip
@click.option("--model-name", default="dieguard", show_default=True)
@TRACKING
@click.option("--split", default="test", show_default=True)
@click.option("--class", "defect_class", default="process_deviation", show_default=True)
def explain_audit(data_dir, bundle, model_name, tracking_uri, split, defect_class) -> None:
    """How often the served explanation names a recorded cause of the die's defect."""
    import tempfile

    from service.explanation_audit import explanation_audit, format_audit

    with tempfile.TemporaryDirectory(prefix="dieguard-explain-") as tmp:
        if bundle is None:
            from registry import download_bundle, open_store

            client = open_store(tracking_uri).client
            bundle = download_bundle(client, model_name, "champion", Path(tmp) / "bundle")
        counts = explanation_audit(bundle, data_dir, split, defect_class)
    click.echo(format_audit(counts, defect_class))


@main.command(name="audit")
@click.argument("model_name")
@click.argument("version")
@TRACKING
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def audit_command(model_name, version, tracking_uri, as_json) -> None:
    """The lineage of one model version (a number or an alias such as champion)."""
    from registry import audit, format_audit, open_store, resolve

    client = open_store(tracking_uri).client
    record = audit(client, model_name, resolve(client, model_name, version).version)
    click.echo(json.dumps(record, indent=2) if as_json else format_audit(record))


def _add_service_commands() -> None:
    from dieguard import ops_cli, service_cli

    for command in (*service_cli.COMMANDS, *ops_cli.COMMANDS):
        main.add_command(command)


_add_service_commands()

if __name__ == "__main__":
    main()
