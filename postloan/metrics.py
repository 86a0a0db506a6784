"""Prometheus metrics, read from the gateway's counters when Prometheus scrapes.

The collectors here read `GatewayStats`, `WriterStats` and the risk and notify
repositories at scrape time, so the gateway's per-frame path does no metrics
work. The one exception is store batch latency, a histogram that needs an
observation per batch: the gateway calls `BatchLatency.observe_writer` after
every stored batch (see `Gateway.batch_observers`).

Metric names follow the Prometheus naming guide: a ``postloan_`` prefix,
base units (seconds, bytes) and ``_total`` on counters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from postloan.gateway import Gateway

# Upper bounds in seconds. SQLite batches of the vendored trajectory replay in
# tests/test_metrics.py took 1-25 ms on a 2-core x86_64 machine. A batch over
# 1 s means the database is overloaded or unreachable.
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _FiringSource(Protocol):
    def firings(self) -> list[dict[str, Any]]: ...


class _TaskSource(Protocol):
    def all(self) -> Iterable[Any]: ...


class BatchLatency(Collector):
    """The store batch latency histogram, fed from `WriterStats`.

    The gateway calls `observe_writer` after each batch that stored fixes, and
    a scrape calls it once more. Its hook runs before the writer counts the
    batch, so each call observes the batch before. NOTE: `BatchWriter` exposes
    only the latest duration (`last_batch_seconds`), so when several batches
    finish between two calls, only the latest of them is observed.
    """

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.histogram = Histogram(
            "postloan_store_batch_seconds",
            "Time to make one batch of records durable in the store or the spool.",
            buckets=BATCH_BUCKETS,
            registry=None,
        )
        self._seen_batches = 0

    def collect(self) -> Iterator[Metric]:
        self.observe_writer(self._gateway.writer.stats)
        yield from self.histogram.collect()

    def observe_writer(self, stats: Any) -> None:
        """Observe the latest batch duration if `stats.batches` grew since last call."""
        batches = int(stats.batches)
        if batches > self._seen_batches:
            self._seen_batches = batches
            self.histogram.observe(float(stats.last_batch_seconds))


class GatewayCollector(Collector):
    """Gateway and store writer counters, read from a running `Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        stats = self._gateway.stats
        writer = self._gateway.writer.stats
        yield _gauge(
            "postloan_connected_devices",
            "Devices logged in on an open connection.",
            ["protocol"],
            self._gateway.connected_devices().items(),
        )
        yield _gauge(
            "postloan_connections",
            "Open TCP connections, logged in or not.",
            ["protocol"],
            stats.connections.items(),
        )
        yield _counter(
            "postloan_frames",
            "Frames decoded, by protocol and message type.",
            ["protocol", "type"],
            stats.frames.items(),
        )
        yield _counter(
            "postloan_decode_errors",
            "Frames that failed to decode, by protocol and reason.",
            ["protocol", "reason"],
            stats.decode_errors.items(),
        )
        yield _counter(
            "postloan_records_dropped",
            "Decoded records not stored, by protocol and reason.",
            ["protocol", "reason"],
            stats.dropped.items(),
        )
        yield _counter(
            "postloan_commands",
            "Downlink command outcomes (sent, answered, timeout, failed, expired).",
            ["outcome"],
            stats.commands.items(),
        )
        yield _single_counter(
            "postloan_fence_events", "Fence events detected.", stats.fence_events
        )
        yield from _writer_metrics(writer)


def _writer_metrics(writer: Any) -> Iterator[Metric]:
    counters = (
        ("fixes_stored", "Fixes written to the store."),
        ("events_stored", "Device events written to the store."),
        ("batches", "Batches made durable in the store or the spool."),
        ("write_failures", "Store writes that failed and were retried or spooled."),
        ("fixes_spooled", "Fixes appended to the durable spool."),
        ("records_rejected", "Records the store rejected as invalid data."),
    )
    for name, help_text in counters:
        value = getattr(writer, name, None)
        if value is not None:
            yield _single_counter(f"postloan_{name}", help_text, value)
    # The spool gauges exist only in writers with a durable spool.
    gauges = (
        ("spool_records", "postloan_spool_depth_records", "Batches in the spool."),
        ("spool_bytes", "postloan_spool_bytes", "Size of the spool on disk."),
    )
    for attribute, name, help_text in gauges:
        value = getattr(writer, attribute, None)
        if value is not None:
            yield _gauge(name, help_text, [], [((), value)])


class RiskCollector(Collector):
    """Risk firings by level and message tasks by state, read from repositories.

    NOTE: the JSON repositories read every firing and task file on each
    scrape, which is fine for thousands of records but not for millions.
    """

    def __init__(
        self, firings: _FiringSource | None, tasks: _TaskSource | None
    ) -> None:
        self._firings = firings
        self._tasks = tasks

    def collect(self) -> Iterator[Metric]:
        if self._firings is not None:
            levels = Counter(str(r.get("level")) for r in self._firings.firings())
            yield _counter(
                "postloan_risk_firings",
                "Risk rule firings recorded, by risk level.",
                ["level"],
                levels.items(),
            )
        if self._tasks is not None:
            states = Counter(str(task.status) for task in self._tasks.all())
            yield _gauge(
                "postloan_message_tasks",
                "Message tasks in the repository, by state.",
                ["state"],
                states.items(),
            )


def build_registry(
    gateway: Gateway | None = None,
    *,
    firings: _FiringSource | None = None,
    tasks: _TaskSource | None = None,
) -> CollectorRegistry:
    """Create a registry with the collectors for whatever parts are running.

    With a gateway, its `batch_observers` get the batch latency histogram.
    """
    registry = CollectorRegistry()
    if gateway is not None:
        registry.register(GatewayCollector(gateway))
        latency = BatchLatency(gateway)
        registry.register(latency)
        gateway.batch_observers.append(latency.observe_writer)
    if firings is not None or tasks is not None:
        registry.register(RiskCollector(firings, tasks))
    return registry


def _labels(key: object) -> list[str]:
    return [str(part) for part in key] if isinstance(key, tuple) else [str(key)]


def _counter(
    name: str,
    help_text: str,
    labels: list[str],
    samples: Iterable[tuple[object, float]],
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=labels)
    for key, value in samples:
        family.add_metric(_labels(key), value)
    return family


def _single_counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def _gauge(
    name: str,
    help_text: str,
    labels: list[str],
    samples: Iterable[tuple[object, float]],
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for key, value in samples:
        family.add_metric(_labels(key), value)
    return family
