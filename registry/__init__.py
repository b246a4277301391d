"""The only module that talks to MLflow: logging, registration, aliases, lineage and audit."""
