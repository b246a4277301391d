"""Production monitoring: drift, rolling escape rate and FPR, latency, missing-modality alerts."""
