"""Names used across the code location, each written once."""

# Asset groups, in the order data flows through them.
RAW = "raw"
CORE = "core"
ML = "ml"
MONITORING = "monitoring"

# The first day a daily snapshot partition exists for.
FIRST_SNAPSHOT_DATE = "2026-01-01"
