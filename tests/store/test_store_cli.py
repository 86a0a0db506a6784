"""The store's CLI commands, run in-process against SQLite and PostgreSQL files."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postloan.cli import main
from postloan.model import Fix
from postloan.store import PostgresStore, SQLiteStore, Store
from postloan.store.cli import load_area

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
DEVICE = "860000000000001"
METRE = 1 / 111_195.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schema: str
) -> Iterator[tuple[str, Store]]:
    """A migrated store and the URL the CLI opens it by."""
    if request.param == "sqlite":
        path = tmp_path / "cli.db"
        store: Store = SQLiteStore(path)
        url = f"sqlite:///{path}"
    else:
        dsn: str = request.getfixturevalue("pg_dsn")
        store = PostgresStore(dsn, schema=pg_schema)
        # libpq's `options` sets the search path the store's schema needs.
        separator = "&" if "?" in dsn else "?"
        url = f"{dsn}{separator}options=-csearch_path%3D{pg_schema}"
    store.migrate()
    yield url, store
    store.close()


def trip() -> list[Fix]:
    """Drive 1 km north, park 20 minutes, drive on."""
    drive = [
        Fix(DEVICE, T0 + timedelta(seconds=10 * i), 38.7 + i * 100 * METRE, -9.14, 30.0)
        for i in range(11)
    ]
    parked = [
        Fix(
            DEVICE,
            T0 + timedelta(seconds=110 + 60 * i),
            38.7 + 1000 * METRE,
            -9.14,
            0.0,
        )
        for i in range(21)
    ]
    return [*drive, *parked]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


WINDOW = ("--since", "2024-05-01T00:00:00Z", "--until", "2024-05-02T00:00:00Z")


def test_cli_tracks_simplified(
    store_url: tuple[str, Store], capsys: pytest.CaptureFixture[str]
) -> None:
    url, store = store_url
    store.write_fixes(trip())

    code, out, _ = run(capsys, "tracks", DEVICE, "--store", url, "--simplify-m", "5")

    assert code == 0
    coordinates = json.loads(out)["geometry"]["coordinates"]
    assert 2 < len(coordinates) < len(trip())


def test_cli_stops(
    store_url: tuple[str, Store], capsys: pytest.CaptureFixture[str]
) -> None:
    url, store = store_url
    store.write_fixes(trip())

    code, out, _ = run(capsys, "stops", DEVICE, *WINDOW, "--store", url)

    assert code == 0
    (stop,) = lines(out)
    assert stop["arrival"] == "2024-05-01T08:01:50Z"
    assert stop["duration_s"] == 1200.0


def test_cli_mileage_in_zone(
    store_url: tuple[str, Store], capsys: pytest.CaptureFixture[str]
) -> None:
    url, store = store_url
    store.write_fixes(trip())

    code, out, _ = run(
        capsys, "mileage", DEVICE, *WINDOW, "--zone", "Europe/Lisbon", "--store", url
    )

    assert code == 0
    (day,) = lines(out)
    assert day["day"] == "2024-05-01"
    assert day["zone"] == "Europe/Lisbon"
    assert math.isclose(float(str(day["distance_km"])), 1.0, abs_tol=0.01)


def test_cli_mileage_unknown_zone(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["mileage", DEVICE, *WINDOW, "--zone", "Nowhere/Atlantis"])

    assert "unknown time zone" in capsys.readouterr().err


def test_cli_latest_filters_devices(
    store_url: tuple[str, Store], capsys: pytest.CaptureFixture[str]
) -> None:
    url, store = store_url
    store.write_fixes([*trip(), Fix("other", T0, 1.0, 2.0)])

    code, out, _ = run(capsys, "latest", DEVICE, "--store", url)

    assert code == 0
    assert [row["device_id"] for row in lines(out)] == [DEVICE]
    assert lines(out)[0]["time"] == "2024-05-01T08:21:50Z"


def test_cli_seen_inside(
    store_url: tuple[str, Store],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    url, store = store_url
    store.write_fixes(trip())
    area = tmp_path / "area.geojson"
    ring = [
        [-9.15, 38.69],
        [-9.13, 38.69],
        [-9.13, 38.71],
        [-9.15, 38.71],
        [-9.15, 38.69],
    ]
    area.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )

    code, out, _ = run(capsys, "seen-inside", str(area), *WINDOW, "--store", url)

    assert code == 0
    (sighting,) = lines(out)
    assert sighting["device_id"] == DEVICE
    assert sighting["fixes"] == len(trip())


def test_cli_seen_inside_rejects_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    area = tmp_path / "line.geojson"
    area.write_text('{"type": "LineString", "coordinates": [[0, 0], [1, 1]]}')

    code, _, err = run(capsys, "seen-inside", str(area), *WINDOW)

    assert code == 2
    assert "LineString" in err


def test_cli_query_on_unmigrated_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"

    code, _, err = run(capsys, "latest", "--store", url)

    assert code == 1
    assert "postloan db migrate" in err


def test_cli_db_maintain_sqlite_has_nothing_to_do(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert run(capsys, "db", "migrate", "--store", url)[0] == 0

    code, out, _ = run(capsys, "db", "maintain", "--store", url)

    assert code == 0
    assert "0 rows moved" in out


def test_load_area_merges_features(tmp_path: Path) -> None:
    path = tmp_path / "two.geojson"
    square = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
    other = [[[x + 5, y] for x, y in square]]
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Polygon", "coordinates": [square]},
                    },
                    {
                        "type": "Feature",
                        "geometry": {"type": "Polygon", "coordinates": other},
                    },
                ],
            }
        )
    )

    area = load_area(path)

    assert area.geom_type == "MultiPolygon"
    assert area.area == pytest.approx(2.0)


def test_tracks_missing_store_is_not_created(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'absent' / 'store.db'}"

    result = subprocess.run(
        [sys.executable, "-m", "postloan.cli", "tracks", "123", "--store", url],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "store not found" in result.stderr
    assert not (tmp_path / "absent").exists()
