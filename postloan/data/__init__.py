"""Real public data shipped with postloan; see the README in each folder."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent


def boundaries_file() -> Path:
    """Return the Portuguese municipality polygons the demo uses as fences."""
    return DATA_DIR / "boundaries" / "portugal_municipalities_caop_simplified.geojson"
