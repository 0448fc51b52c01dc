"""Keeping the Dagster instance itself healthy: recovery from runs whose process died."""
