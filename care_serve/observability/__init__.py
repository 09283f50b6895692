"""Observability: metrics, logging set-up, the per-request log context and redaction."""
