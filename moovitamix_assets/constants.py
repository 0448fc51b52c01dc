"""Names used across the code location, each written once."""

# Asset groups, in the order data flows through them.
RAW = "raw"
CORE = "core"
# Asset key prefix of the core tables staged for audit (write-audit-publish), and their schema.
CORE_STAGING = "core_staging"
ML = "ml"
MONITORING = "monitoring"

# The first day a daily snapshot partition exists for.
FIRST_SNAPSHOT_DATE = "2026-01-01"
