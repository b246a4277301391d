"""The inline inspection service: API, micro-batching, inspection log, feedback, dashboard."""
