"""Moovitamix data platform: the Dagster code location."""
