"""Production evidence: the shadow comparison, the staged rollout's verdicts, rolling escape
rate and FPR, latency and missing-note alerts, drift, and the retrain trigger."""
