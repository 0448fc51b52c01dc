"""Emulator of the Moovitamix music app's HTTP API (tests and local runs only).

The code location (`moovitamix_assets`) never imports this package: it only talks HTTP.
"""

from moovitamix_api.data import Dataset, expected_counts
from moovitamix_api.settings import EmulatorSettings

__all__ = ["Dataset", "EmulatorSettings", "expected_counts"]
