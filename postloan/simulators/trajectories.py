"""Track points and readers for recorded GPS trajectories, and format detection.

This module gathers the public API: the types and motion helpers of
`postloan.simulators.track`, the readers of `postloan.simulators.readers`, and
`load_trajectories`, which picks the reader for a file or a folder.

Each reader returns `Trajectory` values whose points are sorted by time with
unique times. When two points of one trajectory share a time, the one that
comes later in the source is dropped. Coordinates are kept exactly as the
source gives them. Where a source has no speed or course, `Trajectory.from_points`
derives them from consecutive valid points.

Supported sources:

* Porto taxi CSV (ECML/PKDD 2015 "Taxi Service Trajectory" challenge),
* RSK Twizy EV CSV (one Renault Twizy in Rabat-Salé, 2021),
* Barefoot sample JSON (BMW Car IT map matcher test traces),
* NMEA 0183 logs (gpsd regression-test logs and raw tracker captures),
* fix CSV, postloan's own import format (`read_fix_csv`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from postloan.simulators.readers import (
    FIX_CSV_REQUIRED,
    TWIZY_VEHICLE_ID,
    read_barefoot_json,
    read_fix_csv,
    read_nmea_log,
    read_porto_csv,
    read_twizy_csv,
)
from postloan.simulators.track import (
    MAX_SPEED_KMH,
    TrackPoint,
    Trajectory,
    bearing_deg,
    clamp_speed,
    derive_motion,
    haversine_m,
    merge_by_vehicle,
)

__all__ = [
    "DATA_DIR",
    "MAX_SPEED_KMH",
    "TWIZY_VEHICLE_ID",
    "TrackPoint",
    "Trajectory",
    "bearing_deg",
    "clamp_speed",
    "derive_motion",
    "detect_format",
    "haversine_m",
    "load_trajectories",
    "merge_by_vehicle",
    "read_barefoot_json",
    "read_fix_csv",
    "read_nmea_log",
    "read_porto_csv",
    "read_twizy_csv",
    "vendored_trajectories",
]

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "trajectories"


# --- dispatch -----------------------------------------------------------------


def _sniff_csv(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as handle:
        header = handle.readline()
    columns = [column.strip().strip('"') for column in header.split(",")]
    if columns[:2] == ["TRIP_ID", "CALL_TYPE"] and "POLYLINE" in columns:
        return "porto"
    if columns[:3] == ["Date", "Time", "Soc"] and {"LAT", "LON"} <= set(columns):
        return "twizy"
    if set(FIX_CSV_REQUIRED) <= set(columns):
        return "fixes"
    return ""


def _sniff_json(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as handle:
        head = handle.read(4096)
    return "barefoot" if head.lstrip().startswith("[") and '"point"' in head else ""


def _sniff_nmea(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(4096)
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    sentences = [line for line in lines if not line.startswith(b"#")]
    return "nmea" if sentences and sentences[0].startswith(b"$") else ""


_SNIFFERS: dict[str, Callable[[Path], str]] = {
    ".csv": _sniff_csv,
    ".json": _sniff_json,
    ".log": _sniff_nmea,
    ".nmea": _sniff_nmea,
    ".txt": _sniff_nmea,
}

_READERS: dict[str, Callable[[Path], list[Trajectory]]] = {
    "porto": read_porto_csv,
    "twizy": lambda path: [read_twizy_csv(path)],
    "barefoot": lambda path: [read_barefoot_json(path)],
    "nmea": lambda path: [read_nmea_log(path)],
    "fixes": read_fix_csv,
}


def detect_format(path: str | Path) -> str | None:
    """Return the reader name for a file (porto, twizy, barefoot, nmea, fixes)."""
    path = Path(path)
    sniff = _SNIFFERS.get(path.suffix.lower())
    return (sniff(path) or None) if sniff is not None else None


def load_trajectories(path: str | Path) -> list[Trajectory]:
    """Load a trajectory file, or every known file in a folder and its subfolders.

    A file is recognised by its suffix and first line. In a folder, files of no
    known format (READMEs, licences) are skipped and the rest load in path
    order. Trajectories of one vehicle from several files stay separate; use
    `merge_by_vehicle` to join them. Raises ValueError for a single file of no
    known format.
    """
    path = Path(path)
    if path.is_dir():
        files = [file for file in sorted(path.rglob("*")) if file.is_file()]
        found = [(file, detect_format(file)) for file in files]
        return [
            trajectory
            for file, kind in found
            if kind is not None
            for trajectory in _READERS[kind](file)
        ]
    kind = detect_format(path)
    if kind is None:
        raise ValueError(
            f"{path}: unknown trajectory format; expected a Porto taxi or Twizy CSV, "
            "a fix CSV, a Barefoot JSON trace or an NMEA log"
        )
    return _READERS[kind](path)


def vendored_trajectories() -> list[Path]:
    """Return the trajectory files shipped in ``postloan/data/trajectories``."""
    return [
        file
        for file in sorted(DATA_DIR.rglob("*"))
        if file.is_file() and detect_format(file) is not None
    ]
