"""The serving bundle: what a registered version carries, and downloading it to a folder.

A registered version's source is the INT8 ONNX model logged with MLflow's ONNX flavour. Its
artifacts hold ``model.onnx`` (the INT8 graph) and, as the flavour's extra files, everything
else serving needs. `download_bundle` lays them out flat:

    model.onnx                  INT8 ONNX model (deployment signature, see model.onnx_runtime)
    model.operating_point.json  its decision threshold (model.onnx_runtime.operating_point_path)
    scaler.json                 process z-score statistics fitted on train (model.prepare)
    tokenizer.json              note tokenizer fitted on train
    int8_gate.json              parity and gate verdicts (when deployment wrote one)
    model.fp16.onnx             FP16 model for GPU stations, with model.fp16.operating_point.json
                                (when deployment wrote one; the manifest's `variants` say
                                which file runs on which station, see model.bundle)
    bundle.json                 manifest: roles -> files, sha256 of each, kind, threshold
    registered_version.json     which registered version this is (written on download)
    MLmodel, requirements.txt, conda.yaml, python_env.yaml   MLflow's own metadata
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from registry.aliases import resolve
from registry.values import utc_now

FORMAT = "dieguard-serving-bundle/1"
MODEL_FILE = "model.onnx"  # the data file name of MLflow's ONNX flavour
OPERATING_POINT_FILE = "model.operating_point.json"
SCALER_FILE = "scaler.json"
TOKENIZER_FILE = "tokenizer.json"
GATE_FILE = "int8_gate.json"
MANIFEST_FILE = "bundle.json"
VERSION_FILE = "registered_version.json"
EXTRA_DIR = "extra_files"  # where MLflow keeps a flavour's extra files
REQUIRED = {
    "model": MODEL_FILE,
    "operating_point": OPERATING_POINT_FILE,
    "scaler": SCALER_FILE,
    "tokenizer": TOKENIZER_FILE,
}


class BundleError(RuntimeError):
    """A downloaded version lacks a bundle file, or a file does not match its manifest."""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stage_extras(
    folder: Path,
    operating_point: Path,
    scaler: Path,
    tokenizer: Path,
    gate: Path | None,
    model_sha256: str,
    info: Mapping[str, Any],
    extra: Mapping[str, Path] | None = None,
) -> list[str]:
    """Copy the bundle's side files into `folder` under their bundle names, with a manifest.

    Args:
        folder: an empty staging folder.
        operating_point: the model's ``*.operating_point.json``.
        scaler, tokenizer: the scaler.json and tokenizer.json the model was trained with.
        gate: int8_gate.json, or None.
        model_sha256: sha256 of the model.onnx that MLflow will write.
        info: extra manifest fields (kind, threshold, source paths, variants...).
        extra: more files by bundle name (e.g. the FP16 model and its operating point).
    Returns:
        The staged files, for the flavour's ``extra_files``.
    """
    sources = {OPERATING_POINT_FILE: operating_point, SCALER_FILE: scaler}
    sources[TOKENIZER_FILE] = tokenizer
    if gate is not None:
        sources[GATE_FILE] = gate
    sources |= dict(extra or {})
    staged = {name: Path(shutil.copyfile(src, folder / name)) for name, src in sources.items()}
    files = dict(REQUIRED) | ({"gate": GATE_FILE} if gate is not None else {})
    digests = {name: sha256(path) for name, path in staged.items()} | {MODEL_FILE: model_sha256}
    manifest = {"format": FORMAT, "files": files, "sha256": digests, **info}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return [str(p) for p in staged.values()] + [str(folder / MANIFEST_FILE)]


def download_bundle(
    client: MlflowClient, model_name: str, ref: str | int, dest: str | Path
) -> Path:
    """Download a registered version's serving bundle into `dest` (laid out as above).

    Args:
        client: the registry's client.
        model_name: the registered model.
        ref: an alias ("champion") or a version number.
        dest: the bundle folder; an earlier bundle there is replaced, any other content refused.
    Returns:
        `dest`, holding every file of the manifest, checked against its sha256.
    Raises:
        MlflowException: no such model, version or alias; download failed.
        BundleError: a file is missing or altered.
        FileExistsError: `dest` holds something that is not a bundle.
    """
    version = resolve(client, model_name, ref)
    dest = Path(dest)
    _check_replaceable(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=dest.parent) as tmp:
        uri = client.get_model_version_download_uri(model_name, version.version)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=tmp, tracking_uri=client.tracking_uri
            )
        )
        _flatten(local)
        manifest = verify(local)
        record = {
            "model_name": model_name,
            "version": str(version.version),
            "ref": str(ref),
            "run_id": version.run_id,
            "source": version.source,
            "kind": manifest.get("kind"),
            "downloaded_at": utc_now(),
        }
        (local / VERSION_FILE).write_text(json.dumps(record, indent=2))
        if dest.exists():
            shutil.rmtree(dest)
        local.rename(dest)
    return dest


def verify(folder: Path) -> dict:
    """The bundle manifest of `folder`, once every file in it matches its sha256."""
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{folder} has no {MANIFEST_FILE}: not a dieguard serving bundle")
    manifest = json.loads(manifest_path.read_text())
    for name, digest in manifest["sha256"].items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"bundle file {name} is missing from {folder}")
        if sha256(path) != digest:
            raise BundleError(f"bundle file {name} does not match its manifest digest")
    return manifest


def _flatten(folder: Path) -> None:
    extra = folder / EXTRA_DIR
    if extra.is_dir():
        for path in extra.iterdir():
            path.replace(folder / path.name)
        extra.rmdir()


def _check_replaceable(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or _foreign(dest)):
        raise FileExistsError(f"{dest} exists and is not a dieguard serving bundle")


def _foreign(dest: Path) -> bool:
    return any(dest.iterdir()) and not (dest / MANIFEST_FILE).is_file()
