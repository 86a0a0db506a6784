"""Trajectory readers and simulated GT06/JT808 trackers for tests, demos and load.

Nothing on the product's runtime path imports this package.
"""

from postloan.simulators.devices import device_id_for
from postloan.simulators.replay import DeviceReport, replay
from postloan.simulators.trajectories import (
    TrackPoint,
    Trajectory,
    load_trajectories,
    merge_by_vehicle,
    read_barefoot_json,
    read_fix_csv,
    read_nmea_log,
    read_porto_csv,
    read_twizy_csv,
    vendored_trajectories,
)

__all__ = [
    "DeviceReport",
    "TrackPoint",
    "Trajectory",
    "device_id_for",
    "load_trajectories",
    "merge_by_vehicle",
    "read_barefoot_json",
    "read_fix_csv",
    "read_nmea_log",
    "read_porto_csv",
    "read_twizy_csv",
    "replay",
    "vendored_trajectories",
]
