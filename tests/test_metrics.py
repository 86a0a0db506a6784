"""Prometheus metrics after real trajectories are replayed through a gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from postloan.api import ApiContext, TokenTable, create_app
from postloan.config import Config, GatewayConfig, StoreConfig
from postloan.gateway import Gateway
from postloan.metrics import build_registry
from postloan.risk import MemoryRiskRepository
from postloan.simulators import load_trajectories, replay, vendored_trajectories
from postloan.store import Store


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = sample.value
    return samples


async def _replay_and_scrape(store: Store, spool: Path) -> str:
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1", gt06_port=0, jt808_port=0, nmea_port=-1
        ),
        store=StoreConfig(spool_dir=str(spool)),
    )
    trajectories = load_trajectories(vendored_trajectories()[0])[:2]
    async with Gateway(config, store) as gateway:
        registry = build_registry(gateway, firings=MemoryRiskRepository())
        app = create_app(
            ApiContext(store=store, tokens=TokenTable({}), registry=registry)
        )
        runs = [
            replay(trajectories, protocol=p, host="127.0.0.1", port=gateway.ports[p])
            for p in ("gt06", "jt808")
        ]
        await asyncio.gather(*runs)
        await gateway.writer.flush()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1"
        ) as client:
            response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


def test_metrics_fixes_stored_match_store(store: Store, tmp_path: Path) -> None:
    text = asyncio.run(_replay_and_scrape(store, tmp_path / "spool"))

    samples = _samples(text)

    stored = samples[("postloan_fixes_stored_total", ())]
    assert stored > 0
    assert stored == store.count_fixes()


def test_metrics_frames_counted_per_protocol(store: Store, tmp_path: Path) -> None:
    text = asyncio.run(_replay_and_scrape(store, tmp_path / "spool"))

    samples = _samples(text)

    for protocol in ("gt06", "jt808"):
        frames = sum(
            value
            for (name, labels), value in samples.items()
            if name == "postloan_frames_total" and ("protocol", protocol) in labels
        )
        assert frames > 0, protocol


def test_metrics_batch_histogram_observed(store: Store, tmp_path: Path) -> None:
    text = asyncio.run(_replay_and_scrape(store, tmp_path / "spool"))

    samples = _samples(text)

    assert samples[("postloan_store_batch_seconds_count", ())] > 0
    assert ("postloan_spool_depth_records", ()) in samples
