"""Aliases of registered versions (champion, challenger, previous-champion) and references."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

CHAMPION = "champion"  # the version serving takes
CHALLENGER = "challenger"  # the newest registered candidate
PREVIOUS = "previous-champion"  # the champion before the current one (rollback target)


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version an alias points at; None when the alias or the registered model is absent."""
    try:
        aliases = client.get_registered_model(model_name).aliases
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = aliases.get(alias)
    return None if version is None else str(version)


def aliases_of(client: MlflowClient, model_name: str, version: str | int) -> list[str]:
    """The aliases currently on one version, sorted."""
    aliases = client.get_registered_model(model_name).aliases
    return sorted(a for a, v in aliases.items() if str(v) == str(version))


def champion(client: MlflowClient, model_name: str) -> ModelVersion | None:
    """The version aliased ``champion``; None when there is none (or no such model)."""
    version = alias_version(client, model_name, CHAMPION)
    return None if version is None else client.get_model_version(model_name, version)


def resolve(client: MlflowClient, model_name: str, ref: str | int) -> ModelVersion:
    """A version by number (``3``, ``"3"``) or by alias (``"champion"``).

    Raises:
        MlflowException: no such version or alias.
    """
    if isinstance(ref, int) or str(ref).isdigit():
        return client.get_model_version(model_name, str(ref))
    return client.get_model_version_by_alias(model_name, str(ref))


def drop_alias(client: MlflowClient, model_name: str, alias: str, version: str | int) -> None:
    """Remove `alias` when it points at `version` (elsewhere or absent: nothing changes)."""
    if alias_version(client, model_name, alias) == str(version):
        client.delete_registered_model_alias(model_name, alias)
