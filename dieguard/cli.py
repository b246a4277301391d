"""The `dieguard` command line: one sub-command per platform job."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click


@click.group()
def main() -> None:
    """dieguard: multimodal inline die inspection."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--n", "n", type=int, default=2000, show_default=True, help="Dies in all splits.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--val-n", type=int, default=None, help="Validation dies (default 20%).")
@click.option("--test-n", type=int, default=None, help="Test dies (default 20%).")
@click.option("--drift", default="none", show_default=True,
              help="Production change to simulate: none, recipe, notes, illumination.")  # fmt: skip
@click.option("--workers", type=int, default=None, help="Rendering processes (default: cores).")
@click.option("--audit", "audit_dir", type=click.Path(file_okay=False),
              help="Run the signal audit on this data set (after generating, if --out is it).")  # fmt: skip
def synth(out_dir, n, seed, val_n, test_n, drift, workers, audit_dir) -> None:
    """Generate a synthetic data set in the dataset contract, or audit one."""
    from model.synthetic.generate import generate_dataset

    if not out_dir and not audit_dir:
        raise click.UsageError("give --out to generate, --audit to audit, or both")
    if out_dir:
        started = time.perf_counter()
        plan = generate_dataset(out_dir, n, seed, val_n, test_n, drift, workers)
        sizes = plan.groupby("split").size().to_dict()
        click.echo(f"wrote {len(plan)} dies to {out_dir} {sizes} "
                   f"in {time.perf_counter() - started:.1f}s")  # fmt: skip
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


if __name__ == "__main__":
    main()
