"""Run the stored suites on pandas tables with Great Expectations 1.x and build Data Docs.

One ephemeral (in-memory) context per validation run, with a single local Data Docs site
under the caller's docs folder. Each (split, suite) gets its own dataframe asset and
ValidationDefinition: a Checkpoint passes one set of batch parameters, hence one dataframe,
to all its definitions, so the definitions are run one by one and the docs built once.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import pandas as pd

from expectations.catalog import load_suite

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # never phone home from a pipeline

import great_expectations as gx  # noqa: E402
from great_expectations.core.run_identifier import RunIdentifier  # noqa: E402
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.util import convert_to_json_serializable  # noqa: E402

SITE = "dieguard"
PARTIAL_SHOWN = 10  # unexpected values kept per failed expectation

logging.getLogger("great_expectations").setLevel(logging.WARNING)


class SuiteRunner:
    """An in-memory GX context that validates tables and writes Data Docs to `docs_dir`."""

    def __init__(self, docs_dir: str | Path, run_name: str):
        self.docs_dir = Path(docs_dir).resolve()
        site = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(self.docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            data_docs_sites={SITE: site},
            progress_bars=ProgressBarsConfig(globally=False),
            analytics_enabled=False,
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.source = self.context.data_sources.add_pandas("dieguard")
        self.run_id = RunIdentifier(run_name=run_name, run_time=dt.datetime.now(dt.UTC))
        self._suites: dict[str, gx.ExpectationSuite] = {}

    def suite(self, name: str) -> gx.ExpectationSuite:
        """The stored suite `name`, added to the context once."""
        if name not in self._suites:
            self._suites[name] = self.context.suites.add(gx.ExpectationSuite(**load_suite(name)))
        return self._suites[name]

    def validate(self, split: str, suite: str, table: pd.DataFrame, index_column: str) -> dict:
        """Validate one table; return the GX result as a JSON-able dict.

        Args:
            split: e.g. "train" (names the asset and the Data Docs page).
            suite: a stored suite name.
            table: the rows to check.
            index_column: a column whose value names each unexpected row (e.g. die_id).
        """
        name = f"{split}-{suite}"
        batch = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        definition = gx.ValidationDefinition(name=name, data=batch, suite=self.suite(suite))
        definition = self.context.validation_definitions.add(definition)
        result_format = {"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_SHOWN}
        if index_column in table.columns:
            result_format["unexpected_index_column_names"] = [index_column]
        result = definition.run(
            batch_parameters={"dataframe": table}, result_format=result_format, run_id=self.run_id
        )
        summary = result.describe_dict()
        for described, raw in zip(summary["expectations"], result.results):
            described.pop("exception_info", None)
            described["exception"] = exception_message(raw.exception_info)
        summary.pop("result_url", None)
        return convert_to_json_serializable(summary)  # numpy scalars in index lists, too

    def build_docs(self) -> Path:
        """Write the Data Docs site for everything validated so far; return its index.html."""
        self.context.build_data_docs(site_names=[SITE])
        index = self.docs_dir / "index.html"
        if not index.is_file():
            raise RuntimeError(f"Great Expectations wrote no Data Docs index at {index}")
        return index


def exception_message(info: dict) -> str | None:
    """The message of an error GX caught while computing an expectation, if any.

    GX 1.x keeps it either flat or keyed by the metric that failed (e.g. a missing column).
    """
    candidates = [info, *(v for v in info.values() if isinstance(v, dict))]
    for item in candidates:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "error").strip()
    return None
