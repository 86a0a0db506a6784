"""Trackers to stored tracks: real trajectories replayed through the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from postloan.config import Config, GatewayConfig
from postloan.gateway import Gateway
from postloan.simulators import load_trajectories, replay, vendored_trajectories
from postloan.simulators.trajectories import Trajectory
from postloan.store import Store
from postloan.verify import compare_track

REPO = Path(__file__).resolve().parents[1]


def _sample_trajectories() -> list[Trajectory]:
    """A few vehicles of every vendored source, to keep the run short."""
    sample: list[Trajectory] = []
    for path in vendored_trajectories():
        sample.extend(load_trajectories(path)[:4])
    return sample


async def _replay_through_gateway(
    store: Store, trajectories: list[Trajectory]
) -> list[tuple[str, str, str]]:
    config = Config(
        gateway=GatewayConfig(host="127.0.0.1", gt06_port=0, jt808_port=0, nmea_port=-1)
    )
    async with Gateway(config, store) as gateway:
        runs = [
            replay(trajectories, protocol=p, host="127.0.0.1", port=gateway.ports[p])
            for p in ("gt06", "jt808")
        ]
        results = await asyncio.gather(*runs)
        await gateway.writer.flush()
    return [(r.device_id, r.protocol, r.vehicle_id) for rs in results for r in rs]


def test_replay_stores_each_trajectory_exactly(store: Store) -> None:
    trajectories = _sample_trajectories()
    by_vehicle = {t.vehicle_id: t for t in trajectories}

    devices = asyncio.run(_replay_through_gateway(store, trajectories))

    assert len(devices) == 2 * len(trajectories)
    for device_id, protocol, vehicle_id in devices:
        points = by_vehicle[vehicle_id].points
        comparison = compare_track(device_id, protocol, points, store.track(device_id))
        assert comparison.ok, comparison.mismatches


def test_replay_twice_stores_each_fix_once(store: Store) -> None:
    trajectories = _sample_trajectories()[:3]
    expected = 2 * sum(len(t.points) for t in trajectories)

    asyncio.run(_replay_through_gateway(store, trajectories))
    asyncio.run(_replay_through_gateway(store, trajectories))

    assert store.count_fixes() == expected


@pytest.mark.slow
def test_demo_command_stores_every_vendored_trajectory(tmp_path: Path) -> None:
    env = {**os.environ, "POSTLOAN_STORE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "postloan.cli",
            "demo",
            "--store",
            env["POSTLOAN_STORE_URL"],
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "MISMATCH" not in result.stderr
    for protocol in ("gt06", "jt808"):
        line = next(x for x in result.stdout.splitlines() if x.startswith(protocol))
        devices = line.split(":")[1].split(" devices")[0].strip()
        assert f"{devices}/{devices} tracks equal" in line


def test_tracks_command_prints_geojson_line(tmp_path: Path) -> None:
    from postloan.store import open_store

    sqlite_url = f"sqlite:///{tmp_path / 'tracks.db'}"

    trajectory = load_trajectories(vendored_trajectories()[0])[0]
    store = open_store(sqlite_url)
    store.migrate()
    devices = asyncio.run(_replay_through_gateway(store, [trajectory]))
    store.close()
    device_id = devices[0][0]

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "postloan.cli",
            "tracks",
            device_id,
            "--store",
            sqlite_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    document = json.loads(result.stdout)

    assert result.returncode == 0, result.stderr
    coordinates = _coordinates(document)
    assert len(coordinates) == len(trajectory.points)
    first = trajectory.points[0]
    assert coordinates[0][0] == pytest.approx(first.longitude, abs=1e-6)
    assert coordinates[0][1] == pytest.approx(first.latitude, abs=1e-6)


def _coordinates(document: dict[str, object]) -> list[list[float]]:
    if document["type"] == "Feature":
        geometry = document["geometry"]
        assert isinstance(geometry, dict)
        assert geometry["type"] == "LineString"
        return list(geometry["coordinates"])
    assert document["type"] == "FeatureCollection"
    features = document["features"]
    assert isinstance(features, list)
    return [f["geometry"]["coordinates"] for f in features]
