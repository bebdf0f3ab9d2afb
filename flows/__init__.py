"""Prefect flows: one request end to end (unlearn)."""
