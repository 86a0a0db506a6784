"""Publish stored fixes and device events to the MQTT bus through a durable queue.

The gateway hands each batch to `BusPublisher.publish_records` once the store
contains it. The batch is appended to an on-disk spool (the same crash-safe
format as the store writer's spool) and consumed only after the broker has
acknowledged every message of it (QoS 1 PUBACK). A broker restart therefore
loses nothing, and a batch cut off mid-way is published again in full, so
consumers see duplicates and must drop them by (device, fix time) for fixes
and (device, time, kind) for events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiomqtt

from postloan.bus.schema import (
    SCHEMA_VERSION,
    broker_address,
    command_response_topic,
    encode_event,
    encode_fix,
    event_topic,
    position_topic,
)
from postloan.config import BusConfig
from postloan.model import DeviceEvent, Fix
from postloan.store.spool import (
    RecordBatch,
    Spool,
    SpoolError,
    decode_batch,
    encode_batch,
)
from postloan.times import format_time

log = logging.getLogger(__name__)

_RETRY_FIRST_S = 0.1
_BATCHES_PER_ROUND = 8
_PUBLISH_TIMEOUT_S = 10.0
# Publishes awaiting their PUBACK at once; aiomqtt warns above its threshold.
_PUBLISH_WINDOW = 256


@dataclass(slots=True)
class PublisherStats:
    fixes_queued: int = 0
    fixes_published: int = 0
    fixes_dropped: int = 0
    events_queued: int = 0
    events_published: int = 0
    events_dropped: int = 0
    connects: int = 0
    connect_failures: int = 0


class BusPublisher:
    """Publish fixes and device events to their partitioned topics at QoS 1.

    Fixes go to ``postloan/v1/positions/<partition>/<device_id>`` and device
    events to ``postloan/v1/events/<partition>/<device_id>``.
    """

    def __init__(self, config: BusConfig) -> None:
        self.config = config
        self.host, self.port = broker_address(config.url)
        self.stats = PublisherStats()
        self._queue = Spool(config.queue_dir, max_bytes=config.queue_max_mb << 20)
        self._memory: list[RecordBatch] = []
        # NOTE: command responses wait in memory only; the store keeps them.
        self._responses: deque[tuple[str, bytes]] = deque(maxlen=10_000)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Batches not yet acknowledged by the broker."""
        return len(self._memory) + self._queue.records

    def publish_records(
        self, fixes: Sequence[Fix], events: Sequence[DeviceEvent] = ()
    ) -> None:
        """Queue stored fixes and device events; returns at once (event loop thread)."""
        if not fixes and not events:
            return
        self._memory.append(RecordBatch(list(fixes), list(events), []))
        self.stats.fixes_queued += len(fixes)
        self.stats.events_queued += len(events)
        self._wakeup.set()

    def publish_fixes(self, fixes: Sequence[Fix]) -> None:
        """Queue stored fixes for publishing; returns at once (event loop thread)."""
        self.publish_records(fixes)

    def publish_command_response(
        self, device_id: str, command_id: int, response: dict[str, Any]
    ) -> None:
        """Queue a device's command response for its response topic."""
        document = {
            "v": SCHEMA_VERSION,
            "device_id": device_id,
            "command_id": command_id,
            "time": format_time(datetime.now(UTC)),
            "response": response,
        }
        payload = json.dumps(document, separators=(",", ":"), default=str)
        self._responses.append((command_response_topic(device_id), payload.encode()))
        self._wakeup.set()

    async def start(self) -> None:
        await asyncio.to_thread(self._queue.open)
        if self._queue.records:
            log.info(
                "bus queue contains %d batches from an earlier run", self._queue.records
            )
        self._task = asyncio.create_task(self._run(), name="bus.publisher")

    async def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until the broker has every fix; True if so."""
        deadline = time.monotonic() + timeout
        while self.backlog:
            if time.monotonic() >= deadline:
                return False
            self._wakeup.set()
            await asyncio.sleep(0.02)
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued for up to `timeout` seconds, then stop.

        What the broker has not acknowledged stays in the queue folder and is
        published by the next process that opens it.
        """
        await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self._spool_memory)
        await asyncio.to_thread(self._queue.close)
        log.info("bus publisher stopped with %d batches queued", self.backlog)

    async def _run(self) -> None:
        failures = 0
        while True:
            await asyncio.to_thread(self._spool_memory)
            try:
                await self._connected()
            except aiomqtt.MqttError as exc:
                failures += 1
                self.stats.connect_failures += 1
                delay = self._backoff(failures)
                log.warning(
                    "bus broker %s:%d failed (%d in a row), %d batches queued; "
                    "retrying in %.1f s: %s",
                    self.host,
                    self.port,
                    failures,
                    self.backlog,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
            else:
                failures = 0

    async def _connected(self) -> None:
        async with aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.config.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=_PUBLISH_TIMEOUT_S,
            # By default paho keeps all but 20 QoS 1 messages back until their
            # PUBACKs return, which capped one publisher near 4,000 fixes/s.
            max_inflight_messages=_PUBLISH_WINDOW,
        ) as client:
            client.pending_calls_threshold = _PUBLISH_WINDOW
            self.stats.connects += 1
            log.info("bus connected to %s:%d", self.host, self.port)
            while True:
                await self._publish_responses(client)
                await asyncio.to_thread(self._spool_memory)
                payloads = await asyncio.to_thread(self._queue.head, _BATCHES_PER_ROUND)
                if not payloads:
                    self._wakeup.clear()
                    if not self._memory and not self._responses:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wakeup.wait(), 1.0)
                    continue
                batches = [decode_batch(p) for p in payloads]
                await self._publish(client, self._messages(batches))
                await asyncio.to_thread(self._queue.consume, len(payloads))
                self.stats.fixes_published += sum(len(b.fixes) for b in batches)
                self.stats.events_published += sum(len(b.events) for b in batches)

    def _messages(self, batches: Sequence[RecordBatch]) -> list[tuple[str, bytes]]:
        """Return (topic, payload) of each fix and event, in the order stored."""
        partitions = self.config.partitions
        messages: list[tuple[str, bytes]] = []
        for batch in batches:
            messages.extend(
                (position_topic(fix.device_id, partitions), encode_fix(fix))
                for fix in batch.fixes
            )
            messages.extend(
                (event_topic(event.device_id, partitions), encode_event(event))
                for event in batch.events
            )
        return messages

    async def _publish(
        self, client: aiomqtt.Client, messages: Sequence[tuple[str, bytes]]
    ) -> None:
        # Tasks call paho's publish in creation order on one connection, so
        # one device's messages reach the broker in the order they were stored.
        for start in range(0, len(messages), _PUBLISH_WINDOW):
            sends = [
                client.publish(topic, payload, qos=1, timeout=_PUBLISH_TIMEOUT_S)
                for topic, payload in messages[start : start + _PUBLISH_WINDOW]
            ]
            await asyncio.gather(*sends)

    async def _publish_responses(self, client: aiomqtt.Client) -> None:
        while self._responses:
            topic, payload = self._responses[0]
            await client.publish(topic, payload, qos=1, timeout=_PUBLISH_TIMEOUT_S)
            self._responses.popleft()

    def _spool_memory(self) -> None:
        """Move queued batches from memory to the on-disk queue (worker thread)."""
        while self._memory:
            batch = self._memory[0]
            try:
                self._queue.append(encode_batch(batch))
            except (SpoolError, OSError, TypeError, ValueError) as exc:
                # The store contains these records, so only bus consumers miss them.
                self.stats.fixes_dropped += len(batch.fixes)
                self.stats.events_dropped += len(batch.events)
                first = batch.fixes[0] if batch.fixes else batch.events[0]
                log.error(
                    "bus queue %s rejected %d fixes and %d events "
                    "(first of device %s), dropped: %s",
                    self.config.queue_dir,
                    len(batch.fixes),
                    len(batch.events),
                    first.device_id,
                    exc,
                )
            self._memory.pop(0)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.config.retry_max_s, _RETRY_FIRST_S * 2.0**attempt)
        return delay * (0.5 + random.random() / 2)
