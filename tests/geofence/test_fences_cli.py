"""``postloan fences check`` on CSV tracks and on a real SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postloan.geofence.cli import main
from postloan.model import Fix
from postloan.store import open_store

FENCES = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "depot",
            "geometry": {"type": "Point", "coordinates": [-8.61, 41.15]},
            "properties": {"radius_m": 300, "role": "risk"},
        }
    ],
}
HEADER = "device_id,time,latitude,longitude,speed_kmh,valid\n"


def rows(points: list[tuple[float, float]], start: str = "2024-05-01T08:00:00") -> str:
    base = datetime.fromisoformat(start).replace(tzinfo=UTC)
    lines = [
        f"car1,{(base + timedelta(seconds=30 * n)).isoformat().replace('+00:00', 'Z')},"
        f"{lat},{lon},20,true\n"
        for n, (lon, lat) in enumerate(points)
    ]
    return HEADER + "".join(lines)


@pytest.fixture
def fences_file(tmp_path: Path) -> Path:
    path = tmp_path / "fences.geojson"
    path.write_text(json.dumps(FENCES))
    return path


IN_AND_OUT = [(-8.62, 41.15)] * 2 + [(-8.61, 41.15)] * 25 + [(-8.60, 41.15)] * 3


def test_cli_check_csv_prints_json_lines(
    fences_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    track = tmp_path / "track.csv"
    track.write_text(rows(IN_AND_OUT))

    status = main(["fences", "check", str(fences_file), str(track)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert status == 0
    assert [line["event"] for line in lines] == ["enter", "dwell", "exit"]
    assert lines[0] == {
        "device_id": "car1",
        "fence_id": "depot",
        "event": "enter",
        "time": "2024-05-01T08:01:00Z",
    }


def test_cli_check_options_override_defaults(
    fences_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    track = tmp_path / "track.csv"
    track.write_text(rows(IN_AND_OUT))

    status = main(
        [
            "fences",
            "check",
            str(fences_file),
            str(track),
            "--dwell-s",
            "60",
            "--confirm-fixes",
            "3",
        ]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert status == 0
    assert [line["time"] for line in lines[:2]] == [
        "2024-05-01T08:01:00Z",
        "2024-05-01T08:02:00Z",
    ]


def test_cli_check_raw_reports_each_change(
    fences_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    track = tmp_path / "track.csv"
    track.write_text(
        rows([(-8.62, 41.15), (-8.61, 41.15), (-8.62, 41.15), (-8.61, 41.15)])
    )

    status = main(["fences", "check", str(fences_file), str(track), "--raw"])
    events = [
        json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()
    ]

    assert status == 0
    assert events == ["enter", "exit", "enter"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            "car1,2024-05-01T08:00:00Z,41.15,north,0,true",
            "line 2: longitude 'north': not a number",
        ),
        (
            "car1,2024-05-01T08:00:00Z,91,-8.6,0,true",
            "line 2: latitude '91': out of range",
        ),
        ("car1,yesterday,41.15,-8.6,0,true", "line 2: time 'yesterday'"),
        ("car1,2024-05-01T08:00:00,41.15,-8.6,0,true", "no UTC offset"),
        ("car1,2024-05-01T08:00:00Z,41.15,-8.6,0,maybe", "line 2: valid 'maybe'"),
        (",2024-05-01T08:00:00Z,41.15,-8.6,0,true", "line 2: device_id"),
    ],
)
def test_cli_check_bad_row_exits_2(
    fences_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    row: str,
    message: str,
) -> None:
    track = tmp_path / "track.csv"
    track.write_text(HEADER + row + "\n")

    status = main(["fences", "check", str(fences_file), str(track)])
    captured = capsys.readouterr()

    assert status == 2
    assert message in captured.err
    assert captured.out == ""


def test_cli_check_missing_column_exits_2(
    fences_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    track = tmp_path / "track.csv"
    track.write_text("device_id,time,lat,lon\n")

    status = main(["fences", "check", str(fences_file), str(track)])

    assert status == 2
    assert "missing column(s) latitude, longitude" in capsys.readouterr().err


def test_cli_check_bad_fence_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fences = tmp_path / "bad.geojson"
    bad = {
        "type": "Feature",
        "id": "x",
        "geometry": {"type": "Point", "coordinates": [0, 0]},
    }
    fences.write_text(json.dumps(bad))
    track = tmp_path / "track.csv"
    track.write_text(HEADER)

    status = main(["fences", "check", str(fences), str(track)])

    assert status == 2
    assert (
        "feature 0 (id 'x'): a Point fence needs properties.radius_m"
        in capsys.readouterr().err
    )


def test_cli_check_reads_store(
    fences_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'track.db'}"
    start = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    fixes = [
        Fix("car1", start + timedelta(seconds=30 * n), lat, lon)
        for n, (lon, lat) in enumerate(IN_AND_OUT)
    ]
    with open_store(url) as store:
        store.write_fixes(fixes)
    window = ["--since", "2024-05-01T08:00:00Z", "--until", "2024-05-01T09:00:00Z"]

    status = main(
        [
            "fences",
            "check",
            str(fences_file),
            "--device",
            "car1",
            "--store",
            url,
            *window,
        ]
    )
    events = [
        json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()
    ]

    assert status == 0
    assert events == ["enter", "dwell", "exit"]


def test_cli_check_needs_track_or_store(
    fences_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["fences", "check", str(fences_file), "--device", "car1"])

    assert status == 2
    assert "give TRACK.csv" in capsys.readouterr().err


def test_check_reads_csv_rows_in_any_order(tmp_path: Path) -> None:
    fences = tmp_path / "fences.geojson"
    fences.write_text(
        '{"type": "Feature", "id": "square", "properties": {}, "geometry": '
        '{"type": "Polygon", "coordinates": [[[0, 0], [0.1, 0], [0.1, 0.1], '
        "[0, 0.1], [0, 0]]]}}"
    )
    rows = [
        f"d1,2026-01-01T00:{minute:02d}:00Z,0.05,{lon}"
        for minute, lon in enumerate([-0.05, -0.04, 0.05, 0.06, 0.07])
    ]
    ordered = tmp_path / "ordered.csv"
    ordered.write_text("device_id,time,latitude,longitude\n" + "\n".join(rows) + "\n")
    reversed_ = tmp_path / "reversed.csv"
    reversed_.write_text(
        "device_id,time,latitude,longitude\n" + "\n".join(reversed(rows)) + "\n"
    )

    first = subprocess.run(
        [
            sys.executable,
            "-m",
            "postloan.cli",
            "fences",
            "check",
            str(fences),
            str(ordered),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "postloan.cli",
            "fences",
            "check",
            str(fences),
            str(reversed_),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert first.stdout != ""
    assert first.stdout == second.stdout
