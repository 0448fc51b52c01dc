"""The recommendations service: a read-only HTTP API over the serving snapshot the pipeline publishes.

`files` (numpy and the standard library only) is the snapshot's format, written by the code
location's `ml/serving_snapshot` asset and read here; the service itself (`app`, `cli`)
needs the `serving` extra and is never imported by the code location.
"""
