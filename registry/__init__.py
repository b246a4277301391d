"""The only module that talks to MLflow: logging, registration, aliases, lineage and audit.

Pure functions over an explicit store or client; importing this package touches nothing.
"""

from registry.aliases import CHALLENGER, CHAMPION, PREVIOUS, champion, resolve
from registry.audit import audit, training_split
from registry.audit_text import format_audit
from registry.bundle import BundleError, download_bundle
from registry.bundle_run import log_bundle
from registry.datasets import Split
from registry.events import record_event
from registry.lifecycle import (
    ChampionChange,
    ChampionMovedError,
    RollbackError,
    install_first,
    promote,
    rollback,
)
from registry.reports import log_reports
from registry.servable import NotServable, require_servable
from registry.store import Store, open_store
from registry.training import TrainingRecord, log_training
from registry.versions import (
    approval_refusal,
    record_approval,
    refuse_approval,
    register,
    reject,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "BundleError",
    "ChampionChange",
    "ChampionMovedError",
    "NotServable",
    "RollbackError",
    "Split",
    "Store",
    "TrainingRecord",
    "approval_refusal",
    "audit",
    "champion",
    "download_bundle",
    "format_audit",
    "install_first",
    "log_bundle",
    "log_reports",
    "log_training",
    "open_store",
    "promote",
    "record_approval",
    "record_event",
    "refuse_approval",
    "register",
    "reject",
    "require_servable",
    "resolve",
    "rollback",
    "training_split",
]
