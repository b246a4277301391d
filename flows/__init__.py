"""Prefect flows: order and branching only, one @flow per file (retrain, monitor, rollout)."""
