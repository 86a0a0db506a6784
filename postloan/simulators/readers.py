"""Readers of recorded GPS trajectories, one per source format.

Formats and quirks are those of the published files; each reader's docstring
names them. Every reader returns `Trajectory` values built with
`Trajectory.from_points`, so points are sorted by time with unique times.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from postloan.protocols import nmea
from postloan.protocols.base import DecodeError, Message
from postloan.simulators.track import (
    TrackPoint,
    Trajectory,
    clamp_speed,
    whole_seconds_utc,
)

# --- Porto taxi CSV -----------------------------------------------------------

PORTO_STEP = timedelta(seconds=15)  # the challenge's fixed sampling interval


def read_porto_csv(path: str | Path, *, limit: int | None = None) -> list[Trajectory]:
    """Read the Porto taxi challenge CSV: one trajectory per TAXI_ID.

    Each row is one trip. POLYLINE lists [lon, lat] pairs, point i taken at
    TIMESTAMP (Unix seconds, UTC) + 15 i s. A taxi's trips are chained in time
    order. An empty POLYLINE ``[]`` is a trip without points. ``NA`` and empty
    fields occur only in columns this reader ignores. `limit` keeps only the
    first `limit` taxis in file order.
    """
    path = Path(path)
    trips: dict[str, list[list[TrackPoint]]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            taxi = row["TAXI_ID"]
            if taxi not in trips:
                if limit is not None and len(trips) >= limit:
                    continue
                trips[taxi] = []
            trips[taxi].append(_porto_trip(row, path, reader.line_num))
    return [
        Trajectory.from_points(taxi, f"porto:{path.name}", _chain(taxi_trips))
        for taxi, taxi_trips in trips.items()
    ]


def _chain(trips: list[list[TrackPoint]]) -> list[TrackPoint]:
    """Concatenate trips by start time, so an earlier trip wins a shared time."""
    started = sorted((trip for trip in trips if trip), key=lambda trip: trip[0].time)
    return [point for trip in started for point in trip]


def _porto_trip(row: dict[str, str], path: Path, line: int) -> list[TrackPoint]:
    try:
        start = datetime.fromtimestamp(int(row["TIMESTAMP"]), tz=UTC)
        polyline = json.loads(row["POLYLINE"])
        return [
            TrackPoint(
                time=start + index * PORTO_STEP,
                latitude=float(latitude),
                longitude=float(longitude),
            )
            for index, (longitude, latitude) in enumerate(polyline)
        ]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path.name} line {line}: invalid trip row: {exc}") from exc


# --- RSK Twizy CSV ------------------------------------------------------------

TWIZY_VEHICLE_ID = "rsk-twizy"  # every file of the dataset is the same car
_TWIZY_NAME_DATE = re.compile(r"_(\d{2})_(\d{2})_(\d{4})")


def read_twizy_csv(
    path: str | Path,
    *,
    zone: str = "Africa/Casablanca",
    vehicle_id: str | None = None,
) -> Trajectory:
    """Read one RSK Twizy EV dataset file (one trip), one row per second.

    Every file of the dataset is the same car. The default vehicle id is
    ``rsk-twizy/<file name without suffix>``, so that several trips replayed
    together stay apart as devices. To replay the car as one device across
    its trips, pass ``vehicle_id=TWIZY_VEHICLE_ID`` and join the trajectories
    with `merge_by_vehicle`.

    The source states no time zone. `zone` (default Moroccan civil time, UTC+1
    and UTC+0 during Ramadan in the tz database) is an assumption. Some rows
    carry a corrupted Date (``90/02/2032``, ``03/00/2000``) while Time stays
    continuous. So the date comes from the file name (``T3_05_25_2021_1.csv``)
    or else the first valid row. A row's own Date counts only when it is that
    date or the next day, and a Time that goes back by over 12 h also means
    the next day. ``LAT 0.000000`` rows are kept as invalid points. Rows that
    repeat the previous LAT/LON are kept: the logger repeats the last GPS
    position every second until the receiver reports a new one. Speed is the
    GpsSpeed column (km/h), the speed a tracker's receiver would report.
    """
    path = Path(path)
    tz = ZoneInfo(zone)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    day = _twizy_file_date(path, rows)
    points: list[TrackPoint] = []
    previous: time | None = None
    for line, row in enumerate(rows, start=2):
        try:
            clock = datetime.strptime(row["Time"], "%H:%M:%S").time()
            day = _twizy_row_date(row["Date"], day, clock, previous)
            previous = clock
            points.append(_twizy_point(row, datetime.combine(day, clock, tzinfo=tz)))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path.name} line {line}: {exc}") from exc
    name = vehicle_id or f"{TWIZY_VEHICLE_ID}/{path.stem}"
    return Trajectory.from_points(name, f"twizy:{path.name}", points)


def _twizy_file_date(path: Path, rows: Sequence[dict[str, str]]) -> date:
    match = _TWIZY_NAME_DATE.search(path.stem)
    if match is not None:
        month, day, year = (int(part) for part in match.groups())
        return date(year, month, day)
    for row in rows:
        parsed = _parse_us_date(row.get("Date") or "")
        if parsed is not None:
            return parsed
    raise ValueError(f"{path.name}: no valid MM/DD/YYYY date in the name or rows")


def _twizy_row_date(cell: str, day: date, clock: time, previous: time | None) -> date:
    parsed = _parse_us_date(cell)
    if parsed is not None and parsed in (day, day + timedelta(days=1)):
        return parsed
    if (
        previous is not None
        and _seconds_of_day(previous) - _seconds_of_day(clock) > 43_200
    ):
        return day + timedelta(days=1)
    return day


def _parse_us_date(cell: str) -> date | None:
    try:
        return datetime.strptime(cell, "%m/%d/%Y").date()
    except ValueError:
        return None


def _seconds_of_day(value: time) -> int:
    return value.hour * 3600 + value.minute * 60 + value.second


def _twizy_point(row: dict[str, str], local: datetime) -> TrackPoint:
    latitude, longitude = float(row["LAT"]), float(row["LON"])
    return TrackPoint(
        time=whole_seconds_utc(local),
        latitude=latitude,
        longitude=longitude,
        speed_kmh=clamp_speed(float(row["GpsSpeed"])),
        altitude_m=float(row["ALT"]),
        # The logger writes 0.000000 when the receiver gave no latitude.
        valid=latitude != 0.0 and longitude != 0.0,
    )


# --- Barefoot JSON ------------------------------------------------------------

_WKT_POINT = re.compile(r"^\s*POINT\s*\(\s*(\S+)\s+(\S+)\s*\)\s*$", re.IGNORECASE)


def read_barefoot_json(
    path: str | Path, *, vehicle_id: str | None = None
) -> Trajectory:
    """Read a Barefoot sample trace: a JSON array of point records.

    Each record has ``point`` as WKT ``POINT(lon lat)`` and ``time`` as local
    time with its UTC offset (``2014-09-10 06:54:07+0200``). The two sample
    files are one trip (record id ``\\x0001``) sampled at 1 s and at 15 s, so
    the default vehicle id is the file name without suffix (``x0001-015``):
    replayed together, the two files stay two devices.
    """
    path = Path(path)
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise ValueError(f"{path.name}: expected a JSON array of point records")
    points = [
        _barefoot_point(record, path, index) for index, record in enumerate(records)
    ]
    name = vehicle_id or path.stem
    return Trajectory.from_points(name, f"barefoot:{path.name}", points)


def _barefoot_point(record: object, path: Path, index: int) -> TrackPoint:
    try:
        if not isinstance(record, dict):
            raise TypeError("record is not a JSON object")
        match = _WKT_POINT.match(record["point"])
        if match is None:
            raise ValueError(f"invalid WKT point {record['point']!r}")
        moment = datetime.strptime(record["time"], "%Y-%m-%d %H:%M:%S%z")
        return TrackPoint(
            time=whole_seconds_utc(moment),
            latitude=float(match.group(2)),
            longitude=float(match.group(1)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path.name} record {index}: {exc}") from exc


# --- NMEA log -----------------------------------------------------------------


def read_nmea_log(path: str | Path, *, vehicle_id: str | None = None) -> Trajectory:
    """Read an NMEA 0183 log through `postloan.protocols.nmea`.

    Each RMC with a date and position becomes a point, with satellites and
    altitude merged from the GGA of the same time of day. Lines that fail to
    decode (bad checksums, truncated or merged sentences) are skipped, as a
    receiver's consumer skips them. Times are truncated to whole seconds, so of
    two fixes in one second (a 2 Hz receiver) the first is kept. The vehicle
    id is `vehicle_id`, else the log's identification line (an IMEI), else the
    file name without its suffix.
    """
    path = Path(path)
    data = path.read_bytes()
    combiner = nmea.FixCombiner()
    device_id: str | None = None
    points: list[TrackPoint] = []
    for line in nmea.Framer().feed(data + b"\n"):
        message = _decode_nmea_line(line)
        if message is None:
            continue
        if message.type == "login":
            device_id = device_id or message.device_id
        points.extend(_nmea_points(combiner.add(message)))
    points.extend(_nmea_points(combiner.flush()))
    name = vehicle_id or device_id or path.stem
    return Trajectory.from_points(name, f"nmea:{path.name}", points)


def _decode_nmea_line(line: bytes | DecodeError) -> Message | None:
    if isinstance(line, DecodeError):
        return None
    try:
        return nmea.decode(line)
    except DecodeError:
        return None


def _nmea_points(message: Message | None) -> Iterator[TrackPoint]:
    if message is None:
        return
    for location in message.locations:
        yield TrackPoint(
            time=whole_seconds_utc(location.time),
            latitude=location.latitude,
            longitude=location.longitude,
            speed_kmh=clamp_speed(location.speed_kmh),
            course=location.course,
            altitude_m=location.altitude_m,
            valid=location.valid,
        )


# --- fix CSV ------------------------------------------------------------------

FIX_CSV_REQUIRED = ("device_id", "time", "latitude", "longitude")
FIX_CSV_OPTIONAL = ("speed_kmh", "course", "altitude_m", "valid")
_T = TypeVar("_T")
_BOOLEANS = {
    "true": True,
    "1": True,
    "yes": True,
    "false": False,
    "0": False,
    "no": False,
}


def read_fix_csv(path: str | Path) -> list[Trajectory]:
    """Read a fix CSV, one trajectory per device_id, in order of first appearance.

    The header names at least ``device_id,time,latitude,longitude`` and may add
    ``speed_kmh``, ``course``, ``altitude_m`` and ``valid``, in any order.
    ``time`` is ISO 8601 with a UTC offset or ``Z``, truncated to whole seconds.
    ``valid`` is true/false, 1/0 or yes/no. Empty optional cells mean unknown.
    The file is an import of evidence, so the first invalid cell raises
    ValueError naming its line and column instead of being skipped.
    """
    path = Path(path)
    devices: dict[str, list[TrackPoint]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [
            name for name in FIX_CSV_REQUIRED if name not in (reader.fieldnames or [])
        ]
        if missing:
            raise ValueError(
                f"{path.name} line 1: header is missing the column(s) "
                f"{', '.join(missing)}; "
                f"required: {','.join(FIX_CSV_REQUIRED)}"
            )
        for row in reader:
            device = _cell(row, "device_id", str, path.name, reader.line_num)
            if device is None:
                raise ValueError(
                    f"{path.name} line {reader.line_num}, column device_id: "
                    "value is missing"
                )
            devices.setdefault(device, []).append(
                _fix_row(row, path.name, reader.line_num)
            )
    return [
        Trajectory.from_points(device, f"fixes:{path.name}", points)
        for device, points in devices.items()
    ]


def _fix_row(row: dict[str, str], name: str, line: int) -> TrackPoint:
    moment = _cell(row, "time", _parse_time, name, line)
    latitude = _cell(row, "latitude", _parse_range(-90.0, 90.0), name, line)
    longitude = _cell(row, "longitude", _parse_range(-180.0, 180.0), name, line)
    if moment is None or latitude is None or longitude is None:
        column = (
            "time"
            if moment is None
            else "latitude"
            if latitude is None
            else "longitude"
        )
        raise ValueError(f"{name} line {line}, column {column}: value is missing")
    valid = _cell(row, "valid", _parse_bool, name, line)
    return TrackPoint(
        time=moment,
        latitude=latitude,
        longitude=longitude,
        speed_kmh=_cell(row, "speed_kmh", _parse_range(0.0, math.inf), name, line),
        course=_cell(row, "course", _parse_range(0.0, 360.0), name, line),
        altitude_m=_cell(row, "altitude_m", float, name, line),
        valid=True if valid is None else valid,
    )


def _cell(
    row: dict[str, str], column: str, parse: Callable[[str], _T], name: str, line: int
) -> _T | None:
    """Parse one cell; an empty or absent cell gives None."""
    cell = (row.get(column) or "").strip()
    if not cell:
        return None
    try:
        return parse(cell)
    except ValueError as exc:
        raise ValueError(
            f"{name} line {line}, column {column}: invalid value {cell!r}: {exc}"
        ) from exc


def _parse_time(cell: str) -> datetime:
    moment = datetime.fromisoformat(cell)
    if moment.tzinfo is None:
        raise ValueError("time has no UTC offset; append Z or +hh:mm")
    return whole_seconds_utc(moment)


def _parse_range(low: float, high: float) -> Callable[[str], float]:
    def parse(cell: str) -> float:
        value = float(cell)
        if not low <= value <= high:
            raise ValueError(f"expected a number in {low:g}..{high:g}")
        return value

    return parse


def _parse_bool(cell: str) -> bool:
    try:
        return _BOOLEANS[cell.lower()]
    except KeyError:
        raise ValueError("expected true/false, 1/0 or yes/no") from None
