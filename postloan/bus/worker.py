"""Bus workers: store, fence and risk consumers of the position topics.

A worker subscribes with MQTT v5 shared subscriptions
(``$share/postloan-<role>/postloan/v1/positions/<partition>/#``) to the
partitions p with ``p % worker_count == worker_index``. Give each worker of
a role its own index, so every device (one partition) goes to one worker
and its fixes arrive in order. A second worker with the same index joins the
same shared group as a standby, but then the broker alternates messages
between the two and the order per device is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from postloan.bus.schema import (
    PayloadError,
    broker_address,
    decode_fix,
    position_filters,
    worker_partitions,
)
from postloan.config import BusConfig
from postloan.model import FenceEvent, Fix
from postloan.store import Store

log = logging.getLogger(__name__)

ROLES = ("store", "fence", "risk")
_BATCH_SIZE = 500
_BATCH_WAIT_S = 0.05


class Consumer(Protocol):
    async def handle(self, fixes: Sequence[Fix]) -> None: ...


class LastSeen:
    """The newest fix time per device, to drop redelivered and older fixes."""

    def __init__(self) -> None:
        self._times: dict[str, datetime] = {}
        self.duplicates = 0

    def fresh(self, fixes: Sequence[Fix]) -> list[Fix]:
        """Return the fixes newer than every earlier fix of their device.

        NOTE: a blind-area re-upload (fixes older than the device's newest)
        is dropped too, because fence and risk state only move forward.
        """
        fresh: list[Fix] = []
        for fix in fixes:
            last = self._times.get(fix.device_id)
            if last is not None and fix.time <= last:
                self.duplicates += 1
                continue
            self._times[fix.device_id] = fix.time
            fresh.append(fix)
        return fresh


class StoreConsumer:
    """Write bus fixes to this process's store; the store skips duplicates."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.stored = 0

    async def handle(self, fixes: Sequence[Fix]) -> None:
        self.stored += await asyncio.to_thread(self.store.write_fixes, fixes)


class FenceConsumer:
    """Run the fence check on new fixes and store the fence events."""

    def __init__(self, store: Store, check: Callable[[Fix], Sequence[FenceEvent]]):
        self.store = store
        self.check = check
        self.last_seen = LastSeen()
        self.events = 0

    async def handle(self, fixes: Sequence[Fix]) -> None:
        events = [e for fix in self.last_seen.fresh(fixes) for e in self.check(fix)]
        if events:
            self.events += await asyncio.to_thread(
                self.store.write_fence_events, events
            )


class RiskConsumer:
    """Keep the newest fix per device for the risk engine.

    TODO: feed postloan.risk signals from here; the risk engine now reads
    tracks from the store on its own schedule.
    """

    def __init__(self) -> None:
        self.last_seen = LastSeen()
        self.latest: dict[str, Fix] = {}

    async def handle(self, fixes: Sequence[Fix]) -> None:
        for fix in self.last_seen.fresh(fixes):
            self.latest[fix.device_id] = fix


@dataclass(frozen=True, slots=True)
class _Session:
    client_id: str
    group: str
    expiry_s: int


async def consume(
    config: BusConfig,
    role: str,
    consumer: Consumer,
    stop: asyncio.Event,
    *,
    client_id: str | None = None,
    group: str | None = None,
    session_expiry_s: int | None = None,
) -> None:
    """Feed position messages of this worker's partitions to `consumer` until `stop`.

    Reconnects with capped, jittered back-off. The session outlives a
    disconnect by `session_expiry_s`, so the broker keeps QoS 1 messages
    meanwhile. The keyword arguments override ``[bus]`` for tests.
    """
    failures = 0
    session = _Session(
        client_id or f"{config.client_id}-{role}-{config.worker_index}",
        group or f"{config.shared_group}-{role}",
        config.session_expiry_s if session_expiry_s is None else session_expiry_s,
    )
    while not stop.is_set():
        try:
            await _consume_connected(config, role, consumer, stop, session)
        except aiomqtt.MqttError as exc:
            failures += 1
            delay = min(config.retry_max_s, 0.1 * 2.0**failures)
            delay *= 0.5 + random.random() / 2
            log.warning(
                "%s worker %s lost the bus (%d in a row), retrying in %.1f s: %s",
                role,
                session.client_id,
                failures,
                delay,
                exc,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        else:
            failures = 0


async def _consume_connected(
    config: BusConfig,
    role: str,
    consumer: Consumer,
    stop: asyncio.Event,
    session: _Session,
) -> None:
    host, port = broker_address(config.url)
    identifier = session.client_id
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = session.expiry_s
    partitions = worker_partitions(
        config.partitions, config.worker_index, config.worker_count
    )
    async with aiomqtt.Client(
        host,
        port,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
    ) as client:
        for topic_filter in position_filters(session.group, partitions):
            await client.subscribe(topic_filter, qos=1)
        log.info(
            "%s worker %s subscribed to partitions %s", role, identifier, partitions
        )
        inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        # A separate reader, because cancelling a wait on the client's message
        # generator would close the generator.
        reader = asyncio.create_task(_read(client, inbox), name=f"bus.{role}.reader")
        try:
            while not stop.is_set() and not reader.done():
                fixes = await _next_batch(inbox)
                if fixes:
                    await consumer.handle(fixes)
            # NOTE: aiomqtt 2.5 sends PUBACK on receipt (no manual ack), so
            # a worker crash loses what it received and has not handled yet.
            # On a clean stop or a lost connection, everything received is
            # handled before the client goes: the reader's inbox, and what the
            # client queued but its generator did not yield before the error.
            _move_pending(client, inbox)
            while not inbox.empty():
                await consumer.handle(await _next_batch(inbox))
            if reader.done():
                reader.result()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def _move_pending(
    client: aiomqtt.Client, inbox: asyncio.Queue[aiomqtt.Message]
) -> None:
    # aiomqtt keeps received messages in the private `_queue` (2.x); reading it
    # is the only way to reach messages already acknowledged to the broker.
    pending: asyncio.Queue[aiomqtt.Message] | None = getattr(client, "_queue", None)
    while pending is not None and not pending.empty():
        inbox.put_nowait(pending.get_nowait())


async def _read(client: aiomqtt.Client, inbox: asyncio.Queue[aiomqtt.Message]) -> None:
    async for message in client.messages:
        inbox.put_nowait(message)


async def _next_batch(inbox: asyncio.Queue[aiomqtt.Message]) -> list[Fix]:
    """Collect up to _BATCH_SIZE fixes, waiting _BATCH_WAIT_S after the first."""
    fixes: list[Fix] = []
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    while len(fixes) < _BATCH_SIZE:
        timeout = 0.5 if deadline is None else max(0.0, deadline - loop.time())
        try:
            message = await asyncio.wait_for(inbox.get(), timeout)
        except TimeoutError:
            break
        if deadline is None:
            deadline = loop.time() + _BATCH_WAIT_S
        try:
            fixes.append(decode_fix(_payload_bytes(message.payload)))
        except PayloadError as exc:
            log.error("invalid message on %s dropped: %s", message.topic, exc)
    return fixes


def _payload_bytes(payload: object) -> bytes | str:
    if isinstance(payload, bytes | str):
        return payload
    raise PayloadError(f"payload of type {type(payload).__name__} is not JSON text")
