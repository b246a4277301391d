"""The decision share of one die's out-of-range parameters, from the serving model itself."""

from __future__ import annotations

from model.attribution import occlusion_attribution
from model.onnx_runtime import run_session
from model.schema import parameter_names
from service.engine import DieOutput, ModelEngine
from service.records import DieInput


def anomaly_attribution(
    engine: ModelEngine, die: DieInput, output: DieOutput, anomalies: list[dict]
) -> dict[str, float]:
    """How much of a flagged die's decision each out-of-range parameter carries.

    Each anomaly is reset to its training mean in turn and the engine's own ONNX session is
    run on those variants in one batch (model.attribution). Empty for a die not flagged,
    for the vision-only baseline (one region, no process input) and without anomalies.

    Returns:
        {parameter name: drop in the decided class's log-odds without its value}.
    """
    decision = output.decision
    if not decision.flagged or not anomalies or output.region_map.size == 1:
        return {}
    index = {name: i for i, name in enumerate(parameter_names())}
    columns = [index[a["name"]] for a in anomalies]
    shares = occlusion_attribution(
        lambda inputs: run_session(engine.session, inputs)["logits"],
        engine.encode([die]),
        columns,
        decision.defect_class,
    )
    return {a["name"]: float(s) for a, s in zip(anomalies, shares)}
