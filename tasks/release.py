"""Tasks that turn a trained model into a deployable bundle and judge it."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from model.bundle import export_fp32_bundle, score_bundle
from model.config import GateConfig, RunConfig
from model.deploy import optimize_for_deployment
from model.gates import release_gates
from model.prepare import Prepared
from model.quantize import write_gate
from tasks.resume import ONCE_PER_RUN


@task(cache_policy=ONCE_PER_RUN)
def optimize(model_path: str, data: Prepared, out_dir: Path, limits: GateConfig) -> dict:
    """Export, quantize and parity-gate until an INT8 variant ships; the verdict with its folder.

    The variants left unbuilt are compared by `dieguard export`.
    """
    verdict = optimize_for_deployment(
        model_path,
        data,
        out_dir,
        compare=False,
        max_flip_rate=limits.max_flip_rate,
        max_escape=limits.max_escape,
        max_fpr=limits.max_fpr,
    )
    return verdict | {"folder": str(out_dir)}


@task
def export_baseline(model_path: str, prepared_dir: Path, dest: Path) -> str:
    """The vision-only CNN as a FP32 ONNX bundle (the first champion)."""
    return str(export_fp32_bundle(model_path, prepared_dir, dest))


@task(cache_policy=ONCE_PER_RUN)
def score_champion(bundle: str, cfg: RunConfig) -> dict:
    """The champion's figures on this run's test dies."""
    return score_bundle(bundle, cfg)


@task
def judge(fp32: dict, int8: dict, limits: GateConfig, champion: dict | None, out: Path) -> dict:
    """Every release gate's verdict, also written to out/release_gates.json ("path")."""
    verdict = release_gates(fp32, int8, limits, champion)
    return verdict | {"path": str(write_gate(Path(out) / "release_gates.json", verdict))}
