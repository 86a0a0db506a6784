"""Tests of the trajectory readers on the vendored files and on small built files."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postloan.simulators import trajectories as tr
from postloan.simulators.trajectories import TrackPoint, Trajectory

DATA = tr.DATA_DIR
PORTO = DATA / "porto_taxi" / "test_partial_trajectories.csv"
TWIZY_APRIL = DATA / "rsk_twizy" / "T3" / "T3_04_22_2021_1.csv"
TWIZY_MAY = DATA / "rsk_twizy" / "T3" / "T3_05_25_2021_04.csv"
MUNICH_1S = DATA / "barefoot_munich" / "x0001-001.json"
MUNICH_15S = DATA / "barefoot_munich" / "x0001-015.json"
NMEA_DIR = DATA.parent / "nmea"

TWIZY_HEADER = (
    "Date,Time,Soc,Speed,Mode,LAT,LON,ALT,GpsSpeed,Temperature,Humidity,"
    "Weather,WindSpeedAv,Traffic,SpeedLimit\n"
)
# Real rows of the RSK Twizy EV dataset (CC BY 4.0): T1_06_30_2021_2.csv lines
# 3204-3208 (LAT 0.000000 while LON stays) and T1_03_29_2021.csv lines 3263-3266
# (Date corrupted to 90/02/2032 while Time stays continuous).
TWIZY_LAT_ZERO_ROWS = """\
06/30/2021,10:32:41,61.300000,28.740000,D,33.991135,-6.858635,36.000000,21.205400,21.700000,77.000000,Clouds,1.540000,2,60.000000
06/30/2021,10:32:42,61.260000,32.740000,D,33.991135,-6.858635,36.000000,21.205400,21.700000,77.000000,Clouds,1.540000,2,60.000000
06/30/2021,10:32:43,61.260000,32.740000,D,0.000000,-6.858635,36.000000,21.205400,21.700000,77.000000,Clouds,1.540000,2,60.000000
06/30/2021,10:32:44,61.260000,30.630000,D,0.000000,-6.858635,36.000000,21.205400,21.700000,77.000000,Clouds,1.540000,2,60.000000
06/30/2021,10:32:45,61.260000,29.630000,N,0.000000,-6.858635,36.000000,21.205400,21.700000,77.000000,Clouds,1.540000,2,60.000000
"""
TWIZY_BAD_DATE_ROWS = """\
03/29/2021,12:08:06,51.600000,7.100000,D,33.981636,-6.830635,86.000000,3.092840,22.000000,53.000000,Clouds,2.060000,2,60.000000
90/02/2032,12:08:07,51.600000,7.100000,D,33.982014,-6.829762,86.000000,3.074320,22.000000,53.000000,Clouds,2.060000,2,60.000000
90/02/2032,12:08:08,51.600000,7.100000,D,33.982014,-6.829762,86.000000,3.074320,22.000000,53.000000,Clouds,2.060000,2,60.000000
90/02/2032,12:08:09,51.600000,1.220000,D,33.982014,-6.829762,86.000000,3.074320,22.000000,53.000000,Clouds,2.060000,2,60.000000
"""
PORTO_HEADER = (
    '"TRIP_ID","CALL_TYPE","ORIGIN_CALL","ORIGIN_STAND","TAXI_ID","TIMESTAMP",'
    '"DAY_TYPE","MISSING_DATA","POLYLINE"\n'
)
# The challenge's one trip with an empty POLYLINE (train.csv, TRIP_ID
# 1372665673620000353), then two built trips of taxi 20000001 whose second
# starts on the last fix time of the first.
PORTO_EDGE_ROWS = (
    '"1372665673620000353","C","","","20000353","1372665673","A","False","[]"\n'
    '"T1","C",NA,NA,"20000001","1400000030","A","False",'
    '"[[-8.61,41.14],[-8.62,41.15]]"\n'
    '"T0","C",NA,NA,"20000001","1400000000","A","False",'
    '"[[-8.60,41.13],[-8.601,41.131],[-8.602,41.132]]"\n'
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- vendored files -----------------------------------------------------------


def test_vendored_trajectories_lists_every_track() -> None:
    files = tr.vendored_trajectories()

    assert [file.name for file in files] == [
        "x0001-001.json",
        "x0001-015.json",
        "test_partial_trajectories.csv",
        "T3_04_22_2021_1.csv",
        "T3_05_25_2021_04.csv",
    ]


def test_load_trajectories_folder_loads_all() -> None:
    trajectories = tr.load_trajectories(DATA)

    assert len(trajectories) == 2 + 244 + 2
    assert sum(len(t.points) for t in trajectories) == 1194 + 80 + 14438 + 1049 + 2517


def test_load_trajectories_unknown_file_raises(tmp_path: Path) -> None:
    notes = write(tmp_path / "notes.csv", "a,b,c\n1,2,3\n")

    with pytest.raises(ValueError, match="unknown trajectory format"):
        tr.load_trajectories(notes)


# --- Porto --------------------------------------------------------------------


def test_read_porto_counts_match_dataset() -> None:
    trajectories = tr.read_porto_csv(PORTO)

    assert len(trajectories) == 244
    assert sum(len(t.points) for t in trajectories) == 14438
    assert min(t.points[0].time for t in trajectories) == utc(2014, 8, 14, 16, 2, 23)


def test_read_porto_trip_step_15_s() -> None:
    trajectory = tr.read_porto_csv(PORTO, limit=1)[0]

    steps = {b.time - a.time for a, b in itertools.pairwise(trajectory.points)}

    assert trajectory.vehicle_id == "20000542"
    assert trajectory.points[0].time == utc(2014, 8, 14, 17, 57, 17)
    assert (trajectory.points[0].longitude, trajectory.points[0].latitude) == (
        -8.585676,
        41.148522,
    )
    assert timedelta(seconds=15) in steps


def test_read_porto_chains_trips_of_one_taxi() -> None:
    trajectories = tr.read_porto_csv(PORTO)

    days = [{point.time.date() for point in t.points} for t in trajectories]

    assert max(len(taxi_days) for taxi_days in days) >= 2


def test_read_porto_limit_keeps_first_taxis() -> None:
    trajectories = tr.read_porto_csv(PORTO, limit=10)

    assert len(trajectories) == 10
    assert trajectories[1].vehicle_id == "20000108"


def test_read_porto_derived_speed_is_clamped() -> None:
    trajectories = tr.read_porto_csv(PORTO)

    speeds = [point.speed_kmh for t in trajectories for point in t.points]

    assert all(speed is not None and 0.0 <= speed <= 255.0 for speed in speeds)
    assert max(s for s in speeds if s is not None) > 150.0


def test_read_porto_empty_trip_and_duplicate_time(tmp_path: Path) -> None:
    path = write(tmp_path / "porto.csv", PORTO_HEADER + PORTO_EDGE_ROWS)

    trajectories = {t.vehicle_id: t for t in tr.read_porto_csv(path)}

    assert trajectories["20000353"].points == ()
    chained = trajectories["20000001"].points
    assert [point.time for point in chained] == [
        utc(2014, 5, 13, 16, 53, 20) + timedelta(seconds=s) for s in (0, 15, 30, 45)
    ]
    # At 1400000030 the first trip (T0, earlier start) wins over T1's first fix.
    assert (chained[2].longitude, chained[2].latitude) == (-8.602, 41.132)
    assert (chained[3].longitude, chained[3].latitude) == (-8.62, 41.15)


def test_read_porto_bad_polyline_names_line(tmp_path: Path) -> None:
    row = '"T9","C",NA,NA,"20000009","1400000000","A","False","[[-8.6,"\n'
    path = write(tmp_path / "porto.csv", PORTO_HEADER + row)

    with pytest.raises(ValueError, match="line 2"):
        tr.read_porto_csv(path)


# --- RSK Twizy ----------------------------------------------------------------


def test_read_twizy_ramadan_offset_is_zero() -> None:
    trajectory = tr.read_twizy_csv(TWIZY_APRIL)

    assert trajectory.vehicle_id == "rsk-twizy/T3_04_22_2021_1"
    assert len(trajectory.points) == 1049
    assert trajectory.points[0].time == utc(2021, 4, 22, 8, 42, 50)
    assert trajectory.points[-1].time == utc(2021, 4, 22, 9, 0, 18)


def test_read_twizy_unpadded_date_and_summer_offset() -> None:
    trajectory = tr.read_twizy_csv(TWIZY_MAY)

    assert len(trajectory.points) == 2517
    assert trajectory.points[0].time == utc(2021, 5, 25, 16, 19, 58)


def test_read_twizy_keeps_repeated_positions() -> None:
    points = tr.read_twizy_csv(TWIZY_APRIL).points

    changes = sum(
        1
        for a, b in itertools.pairwise(points)
        if (a.latitude, a.longitude) != (b.latitude, b.longitude)
    )

    assert changes == 79
    assert len(points) == 1049


def test_read_twizy_uses_gps_speed() -> None:
    points = tr.read_twizy_csv(TWIZY_APRIL).points

    assert points[0].speed_kmh == pytest.approx(0.03704)
    assert points[0].altitude_m == 151.0


def test_read_twizy_lat_zero_rows_are_invalid(tmp_path: Path) -> None:
    path = write(tmp_path / "twizy.csv", TWIZY_HEADER + TWIZY_LAT_ZERO_ROWS)

    points = tr.read_twizy_csv(path).points

    assert [point.valid for point in points] == [True, True, False, False, False]
    assert points[2].latitude == 0.0
    assert points[2].longitude == -6.858635
    assert points[2].time == utc(2021, 6, 30, 9, 32, 43)


def test_read_twizy_bad_date_rows_take_file_date(tmp_path: Path) -> None:
    path = write(tmp_path / "twizy.csv", TWIZY_HEADER + TWIZY_BAD_DATE_ROWS)

    points = tr.read_twizy_csv(path).points

    assert [point.time for point in points] == [
        utc(2021, 3, 29, 11, 8, s) for s in (6, 7, 8, 9)
    ]


def test_read_twizy_date_from_file_name(tmp_path: Path) -> None:
    rows = TWIZY_BAD_DATE_ROWS.replace("03/29/2021", "30/00/2006")
    path = write(tmp_path / "T1_03_29_2021.csv", TWIZY_HEADER + rows)

    points = tr.read_twizy_csv(path).points

    assert points[0].time == utc(2021, 3, 29, 11, 8, 6)


def test_read_twizy_midnight_rollover(tmp_path: Path) -> None:
    rows = TWIZY_BAD_DATE_ROWS.splitlines()
    late = rows[0].replace("12:08:06", "23:59:59")
    early = rows[1].replace("12:08:07", "00:00:00")
    path = write(tmp_path / "twizy.csv", TWIZY_HEADER + late + "\n" + early + "\n")

    points = tr.read_twizy_csv(path, zone="UTC").points

    assert [point.time for point in points] == [
        utc(2021, 3, 29, 23, 59, 59),
        utc(2021, 3, 30, 0, 0, 0),
    ]


# --- Barefoot Munich ----------------------------------------------------------


def test_read_barefoot_offset_to_utc() -> None:
    trajectory = tr.read_barefoot_json(MUNICH_1S)

    assert trajectory.vehicle_id == "x0001-001"
    assert len(trajectory.points) == 1194
    assert trajectory.points[0].time == utc(2014, 9, 10, 4, 54, 7)
    assert trajectory.points[-1].time == utc(2014, 9, 10, 5, 14, 2)
    assert trajectory.points[0].longitude == 11.564388282625075
    assert trajectory.points[0].latitude == 48.16350662940509


def test_read_barefoot_15_s_file() -> None:
    trajectory = tr.read_barefoot_json(MUNICH_15S)

    assert len(trajectory.points) == 80
    assert trajectory.points[-1].time == utc(2014, 9, 10, 5, 13, 52)


def test_read_barefoot_gps_jump_speed_clamped() -> None:
    points = tr.read_barefoot_json(MUNICH_1S).points

    jump = points[619]

    assert jump.time == utc(2014, 9, 10, 5, 4, 27)
    assert jump.speed_kmh == 255.0


def test_read_barefoot_two_second_gaps() -> None:
    points = tr.read_barefoot_json(MUNICH_1S).points

    gaps = [
        b.time
        for a, b in itertools.pairwise(points)
        if b.time - a.time > timedelta(seconds=1)
    ]

    assert gaps == [utc(2014, 9, 10, 5, 0, 49), utc(2014, 9, 10, 5, 11, 31)]


# --- NMEA logs ----------------------------------------------------------------


def test_read_nmea_log_bt451_whole_seconds() -> None:
    trajectory = tr.read_nmea_log(NMEA_DIR / "bt451.log")

    assert trajectory.vehicle_id == "bt451"
    assert [point.time for point in trajectory.points] == [
        utc(2009, 12, 9, 14, 33, 6),
        utc(2009, 12, 9, 14, 33, 7),
        utc(2009, 12, 9, 14, 33, 8),
        utc(2009, 12, 9, 15, 25, 5),
        utc(2009, 12, 9, 15, 25, 6),
        utc(2009, 12, 9, 15, 25, 7),
        utc(2009, 12, 9, 15, 25, 8),
    ]
    assert trajectory.points[0].altitude_m == 128.9
    assert trajectory.points[0].speed_kmh == pytest.approx(30.324 * 1.852)


def test_read_nmea_log_coldboot_skips_bad_lines() -> None:
    trajectory = tr.read_nmea_log(NMEA_DIR / "gp-320fw-2019-04-07-coldboot.log")

    assert len(trajectory.points) == 12
    assert sum(point.valid for point in trajectory.points) == 1


def test_read_nmea_log_identification_line(tmp_path: Path) -> None:
    text = (
        "358735070530281\r\n"
        "$GPRMC,143307.00,A,5546.82649,N,02334.71625,E,30.860,221.48,091209,,,A*5D\r\n"
    )
    path = write(tmp_path / "capture.nmea", text)

    trajectory = tr.read_nmea_log(path)

    assert trajectory.vehicle_id == "358735070530281"
    assert len(trajectory.points) == 1


# --- fix CSV ------------------------------------------------------------------


def test_read_fix_csv_groups_by_device(tmp_path: Path) -> None:
    text = (
        "time,device_id,latitude,longitude,speed_kmh,valid\n"
        "2024-01-01T10:00:10Z,A,41.001,-8.6,,true\n"
        "2024-01-01T10:00:00+01:00,B,41.2,-8.7,30,0\n"
        "2024-01-01T10:00:00.900Z,A,41.0,-8.6,12.5,yes\n"
        "2024-01-01T10:00:00Z,A,40.0,-8.0,99,yes\n"
    )
    path = write(tmp_path / "fixes.csv", text)

    trajectories = {t.vehicle_id: t for t in tr.read_fix_csv(path)}

    device_a = trajectories["A"].points
    assert [point.time for point in device_a] == [
        utc(2024, 1, 1, 10, 0, 0),
        utc(2024, 1, 1, 10, 0, 10),
    ]
    assert device_a[0].latitude == 41.0
    assert device_a[0].speed_kmh == 12.5
    assert device_a[1].speed_kmh == pytest.approx(40.03, abs=0.05)
    assert trajectories["B"].points[0].time == utc(2024, 1, 1, 9, 0, 0)
    assert trajectories["B"].points[0].valid is False


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("A,2024-01-01T10:00:00Z,91.0,-8.6", "line 3, column latitude"),
        ("A,2024-01-01T10:00:00Z,41.0,east", "line 3, column longitude"),
        ("A,2024-01-01T10:00:00,41.0,-8.6", "line 3, column time: .*no UTC offset"),
        ("A,yesterday,41.0,-8.6", "line 3, column time"),
        (",2024-01-01T10:00:00Z,41.0,-8.6", "line 3, column device_id"),
        ("A,2024-01-01T10:00:00Z,,-8.6", "line 3, column latitude: value is missing"),
    ],
)
def test_read_fix_csv_bad_cell_location(tmp_path: Path, row: str, message: str) -> None:
    text = "device_id,time,latitude,longitude\nA,2024-01-01T09:00:00Z,41.0,-8.6\n" + row
    path = write(tmp_path / "fixes.csv", text + "\n")

    with pytest.raises(ValueError, match=message):
        tr.read_fix_csv(path)


def test_read_fix_csv_bad_valid_flag(tmp_path: Path) -> None:
    text = (
        "device_id,time,latitude,longitude,valid\nA,2024-01-01T09:00:00Z,41,-8,maybe\n"
    )
    path = write(tmp_path / "fixes.csv", text)

    with pytest.raises(ValueError, match="line 2, column valid"):
        tr.read_fix_csv(path)


def test_read_fix_csv_missing_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "fixes.csv", "device_id,time,latitude\nA,2024-01-01T09:00:00Z,41\n"
    )

    with pytest.raises(
        ValueError, match=r"line 1: header is missing the column\(s\) longitude"
    ):
        tr.read_fix_csv(path)


# --- types and helpers --------------------------------------------------------


def test_track_point_rejects_naive_time() -> None:
    with pytest.raises(ValueError, match="not UTC"):
        TrackPoint(time=datetime(2024, 1, 1), latitude=0.0, longitude=0.0)


def test_track_point_rejects_fractional_second() -> None:
    with pytest.raises(ValueError, match="whole seconds"):
        TrackPoint(
            time=datetime(2024, 1, 1, 0, 0, 0, 5, tzinfo=UTC), latitude=0, longitude=0
        )


def test_trajectory_rejects_unsorted_points() -> None:
    early = TrackPoint(time=utc(2024, 1, 1), latitude=0.0, longitude=0.0)
    late = TrackPoint(time=utc(2024, 1, 2), latitude=0.0, longitude=0.0)

    with pytest.raises(ValueError, match="increasing time order"):
        Trajectory("v", "test", (late, early))


def test_derive_motion_north_step() -> None:
    points = [
        TrackPoint(time=utc(2024, 1, 1, 0, 0, 0), latitude=41.0, longitude=-8.6),
        TrackPoint(time=utc(2024, 1, 1, 0, 0, 10), latitude=41.001, longitude=-8.6),
        TrackPoint(time=utc(2024, 1, 1, 0, 0, 20), latitude=41.001, longitude=-8.6),
    ]

    derived = tr.derive_motion(points)

    assert derived[1].speed_kmh == pytest.approx(40.03, abs=0.05)
    assert derived[1].course == pytest.approx(0.0, abs=1e-6)
    assert derived[0].course == derived[1].course
    assert derived[2].speed_kmh == 0.0
    assert derived[2].course == derived[1].course


def test_derive_motion_skips_invalid_points() -> None:
    points = [
        TrackPoint(time=utc(2024, 1, 1, 0, 0, 0), latitude=41.0, longitude=-8.6),
        TrackPoint(
            time=utc(2024, 1, 1, 0, 0, 5), latitude=0.0, longitude=-8.6, valid=False
        ),
        TrackPoint(time=utc(2024, 1, 1, 0, 0, 10), latitude=41.001, longitude=-8.6),
    ]

    derived = tr.derive_motion(points)

    assert derived[1].speed_kmh is None
    assert derived[2].speed_kmh == pytest.approx(40.03, abs=0.05)


def test_load_vendored_vehicle_ids_are_unique() -> None:
    trajectories = tr.load_trajectories(DATA)

    vehicle_ids = [trajectory.vehicle_id for trajectory in trajectories]

    assert len(set(vehicle_ids)) == len(vehicle_ids)


def test_merge_by_vehicle_joins_twizy_days() -> None:
    parts = [
        tr.read_twizy_csv(path, vehicle_id=tr.TWIZY_VEHICLE_ID)
        for path in (TWIZY_APRIL, TWIZY_MAY)
    ]

    merged = tr.merge_by_vehicle(parts)

    assert len(merged) == 1
    assert merged[0].vehicle_id == "rsk-twizy"
    assert len(merged[0].points) == 1049 + 2517
    assert merged[0].source == "twizy:T3_04_22_2021_1.csv;twizy:T3_05_25_2021_04.csv"
