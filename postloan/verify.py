"""Compare a stored track with the trajectory that was replayed into it.

Each protocol carries coordinates at its own resolution: GT06 in units of
1/1,800,000 degree (1/30,000 minute), JT808 in 1e-6 degree, NMEA 0183 in
1e-4 minute or finer. A stored coordinate matches when it is within half a
unit of the source value; a time matches when it is the same UTC second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from postloan.model import Fix
from postloan.simulators.trajectories import TrackPoint

RESOLUTION_DEG = {"gt06": 1 / 1_800_000, "jt808": 1e-6, "nmea": 1e-4 / 60}


@dataclass(slots=True)
class TrackComparison:
    device_id: str
    protocol: str
    expected: int
    stored: int
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.expected == self.stored and not self.mismatches


def compare_track(
    device_id: str,
    protocol: str,
    points: Sequence[TrackPoint],
    stored: Sequence[Fix],
    *,
    max_reported: int = 5,
) -> TrackComparison:
    """Check count, coordinates (to the protocol's resolution) and UTC times."""
    result = TrackComparison(device_id, protocol, len(points), len(stored))
    tolerance = RESOLUTION_DEG[protocol] / 2 + 1e-9
    for index, (point, fix) in enumerate(zip(points, stored, strict=False)):
        problems = []
        if point.time != fix.time:
            problems.append(f"time {fix.time.isoformat()} != {point.time.isoformat()}")
        if abs(point.latitude - fix.latitude) > tolerance:
            problems.append(f"latitude {fix.latitude} != {point.latitude}")
        if abs(point.longitude - fix.longitude) > tolerance:
            problems.append(f"longitude {fix.longitude} != {point.longitude}")
        if problems and len(result.mismatches) < max_reported:
            result.mismatches.append(f"point {index}: " + ", ".join(problems))
        elif problems:
            result.mismatches.append(f"point {index}: mismatch")
    if result.expected != result.stored:
        result.mismatches.append(
            f"count: stored {result.stored} fixes, trajectory has {result.expected}"
        )
    return result
