"""Does the explanation name the real cause? The served model's sentences against the truth.

Every die of one class in a synthetic split goes through the service's own request parsing,
engine and response (`inspection.response_body`), and the parameter its explanation names is
checked against the causes the generator recorded (`synth_truth.csv`, `process_cause`). Two
references are counted on the same dies: the largest out-of-range value, and the parameter
the attended region's process attention weighs most (what the explanation used to name).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from model.contract import read_split
from model.schema import CLASS_NAMES, parameter_names
from model.synthetic.generate import TRUTH_FILE
from service.attribution import anomaly_attribution
from service.engine import ModelEngine
from service.explain import anomalous_parameters
from service.inputs import parse_die
from service.inspection import response_body

NAMED = re.compile(r"rests most on (\w+),")
BATCH = 32


def explanation_audit(
    bundle: str | Path,
    data_dir: str | Path,
    split: str = "test",
    defect_class: str = "process_deviation",
    sigma: float = 2.0,
) -> dict:
    """Score the explanations of one class's dies against the generator's recorded causes.

    Args:
        bundle: a serving bundle folder (model.bundle).
        data_dir: a synthetic data set root with `synth_truth.csv` beside its splits.
        split: the split whose dies are explained.
        defect_class: the class whose dies are audited (a CLASS_NAMES entry).
        sigma: the service's anomaly threshold.
    Returns:
        counts: dies, flagged, named (a parameter named at all), named_cause, largest_cause
        (largest anomaly is a cause), attention_cause, and the cause rate of the named one.
    """
    if defect_class not in CLASS_NAMES:
        raise ValueError(f"unknown class {defect_class!r}; expected one of {CLASS_NAMES}")
    causes = _recorded_causes(Path(data_dir))
    tables = read_split(Path(data_dir) / split)
    rows = [i for i, y in enumerate(tables.labels) if CLASS_NAMES[y] == defect_class]
    engine = ModelEngine(bundle)
    counts = dict.fromkeys(
        ("dies", "flagged", "named", "named_cause", "largest_cause", "attention_cause"), 0
    )
    for start in range(0, len(rows), BATCH):
        dies = [_die(tables, i) for i in rows[start : start + BATCH]]
        for die, output in zip(dies, engine.predict(dies, "champion")):
            anomalies = anomalous_parameters(die.process, engine.scaler, sigma)
            shares = anomaly_attribution(engine, die, output, anomalies)
            body = response_body(die, output, anomalies, shares)
            _count(counts, body, output, causes[die.die_id])
    counts["cause_rate"] = counts["named_cause"] / counts["dies"] if counts["dies"] else math.nan
    return counts


def _count(counts: dict, body: dict, output, truth: set[str]) -> None:
    counts["dies"] += 1
    counts["flagged"] += bool(body["flagged"])
    found = NAMED.search(body["explanation"])
    counts["named"] += found is not None
    counts["named_cause"] += found is not None and found.group(1) in truth
    anomalies = body["anomalous_parameters"]
    counts["largest_cause"] += bool(anomalies) and anomalies[0]["name"] in truth
    region = int(np.argmax(output.region_map))
    attended = parameter_names()[int(np.argmax(output.process_attention[region]))]
    counts["attention_cause"] += attended in truth


def _recorded_causes(data_dir: Path) -> dict[str, set[str]]:
    path = data_dir / TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: only a synthetic data set records causes")
    truth = pd.read_csv(path, usecols=["die_id", "process_cause"], keep_default_na=False)
    return {d: set(filter(None, c.split(";"))) for d, c in truth.itertuples(index=False)}


def _die(tables, i: int):
    """Row i of a split as the service parses an inspection request."""
    row = tables.process.iloc[i]
    die_id = tables.ids[i]
    return parse_die(
        tables.image_paths[i].read_bytes(),
        json.dumps({k: float(v) for k, v in row.items() if v == v}),  # NaN: a dropout
        die_id,
        str(tables.metadata.loc[die_id, "wafer_id"]),
        tables.notes[i] or None,
    )


def format_audit(counts: dict, defect_class: str = "process_deviation") -> str:
    """The audit as a few lines of text."""
    n = counts["dies"]

    def share(k: str) -> str:
        return f"{counts[k]}/{n} ({counts[k] / n:.1%})" if n else "0/0"

    return "\n".join(
        [
            f"{defect_class} dies: {n}, flagged {share('flagged')}",
            f"explanation names a true cause: {share('named_cause')}"
            f" (names a parameter at all: {share('named')})",
            f"largest out-of-range value is a true cause: {share('largest_cause')}",
            f"process attention of the attended region names a true cause:"
            f" {share('attention_cause')}",
        ]
    )
