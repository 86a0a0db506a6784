"""Bus workers: store, fence and risk consumers of the position and event topics.

A worker subscribes to the partitions p with ``p % worker_count ==
worker_index`` (``postloan/v1/positions/<partition>/#``, and the ``events``
topics for a consumer of device events). Give each worker of a role its own
index, so every device (one partition) goes to one worker and its messages
arrive in order. With ``[bus] shared_subscriptions`` true the filters carry
the MQTT v5 share prefix ``$share/<group>-<role>/``, so a second worker with
the same index joins the group as a standby. The broker then alternates
messages between the two, and the order per device is lost.

A worker sends the PUBACK of a message only after its consumer has handled
the batch that contains it. The broker keeps an unacknowledged message in the
worker's session and sends it again when the worker reconnects, so a worker
killed mid-batch loses nothing. Consumers see the repeated messages and drop
them: the store by its unique keys, fence and risk consumers by fix time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from postloan.bus.schema import (
    PayloadError,
    broker_address,
    decode_event,
    decode_fix,
    event_filters,
    position_filters,
    topic_kind,
    worker_partitions,
)
from postloan.config import BusConfig
from postloan.model import DeviceEvent, FenceEvent, Fix
from postloan.store import Store

log = logging.getLogger(__name__)

ROLES = ("store", "fence", "risk")
BATCH_SIZE = 500
_BATCH_WAIT_S = 0.05
# MQTT 5 Receive Maximum of a worker: QoS 1 messages the broker may send
# before their PUBACK, here the protocol's maximum. PUBACKs wait until a batch
# is handled. Without this property Mosquitto 2.0 sends 20 at a time (its
# max_inflight_messages), and it queues at most max_queued_messages (1000)
# more per session and drops the rest, so a lagging worker would lose messages.
RECEIVE_MAXIMUM = 65_535


class Consumer(Protocol):
    async def handle(self, fixes: Sequence[Fix]) -> None: ...


@runtime_checkable
class EventConsumer(Protocol):
    """A consumer that also takes device events; its worker subscribes to them."""

    async def handle(self, fixes: Sequence[Fix]) -> None: ...

    async def handle_events(self, events: Sequence[DeviceEvent]) -> None: ...


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
    """Write bus fixes and device events to this process's store.

    The store skips a fix it contains by (device, fix time) and an event by
    (device, time, kind), so repeated messages are written once.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.stored = 0
        self.events_stored = 0

    async def handle(self, fixes: Sequence[Fix]) -> None:
        self.stored += await asyncio.to_thread(self.store.write_fixes, fixes)

    async def handle_events(self, events: Sequence[DeviceEvent]) -> None:
        self.events_stored += await asyncio.to_thread(
            self.store.write_device_events, events
        )


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
    """Feed the messages of this worker's partitions to `consumer` until `stop`.

    Position messages go to ``consumer.handle``, and device events to
    ``consumer.handle_events`` when the consumer has it (`EventConsumer`).
    Reconnects with capped, jittered back-off. The session outlives a
    disconnect by `session_expiry_s`, so the broker keeps QoS 1 messages
    meanwhile, including those sent but not acknowledged. The keyword
    arguments override ``[bus]`` for tests.
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
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    partitions = worker_partitions(
        config.partitions, config.worker_index, config.worker_count
    )
    client = aiomqtt.Client(
        host,
        port,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
    )
    # paho 2.2 sends the PUBACK right after its on_message callback unless
    # manual ack is on. aiomqtt 2.5 has no option for it, but it keeps its paho
    # client in `_client`. With manual ack, `_ack` sends each PUBACK later.
    client._client.manual_ack_set(True)
    async with client:
        group = session.group if config.shared_subscriptions else None
        filters = position_filters(group, partitions)
        if isinstance(consumer, EventConsumer):
            filters += event_filters(group, partitions)
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        log.info(
            "%s worker %s subscribed to partitions %s", role, identifier, partitions
        )
        inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        # A separate reader, so that a batch wait that times out never cancels
        # a read of the client's queue: a message taken from the queue in the
        # same loop iteration as the cancellation would be lost.
        reader = asyncio.create_task(_read(client, inbox), name=f"bus.{role}.reader")
        try:
            handled = True
            while handled and not stop.is_set() and not reader.done():
                messages = await _next_batch(inbox)
                if not messages:
                    continue
                handled = await _handle(role, consumer, messages, stop, config)
                if handled:
                    _ack(client, messages)
            # Handle what the reader took from the client before the stop or
            # the lost connection. After a lost connection no PUBACK can go
            # out, so the broker sends these again and consumers drop the
            # duplicates. Handling them now still matters when the session
            # ends at disconnect (session_expiry_s 0). Messages the reader had
            # not taken stay unacknowledged, and the broker sends them again
            # on the next connection of this session. After a batch that
            # failed at the stop, later ones wait too, so order is kept.
            await asyncio.sleep(0)
            connected = not reader.done()
            while handled and not inbox.empty():
                messages = await _next_batch(inbox)
                handled = await _handle(role, consumer, messages, stop, config)
                if handled and connected:
                    _ack(client, messages)
            if reader.done():
                reader.result()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _read(client: aiomqtt.Client, inbox: asyncio.Queue[aiomqtt.Message]) -> None:
    async for message in client.messages:
        inbox.put_nowait(message)


async def _next_batch(inbox: asyncio.Queue[aiomqtt.Message]) -> list[aiomqtt.Message]:
    """Collect up to BATCH_SIZE messages, waiting _BATCH_WAIT_S after the first."""
    messages: list[aiomqtt.Message] = []
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    while len(messages) < BATCH_SIZE:
        if not inbox.empty():
            messages.append(inbox.get_nowait())
            continue
        timeout = 0.5 if deadline is None else max(0.0, deadline - loop.time())
        try:
            message = await asyncio.wait_for(inbox.get(), timeout)
        except TimeoutError:
            break
        if deadline is None:
            deadline = loop.time() + _BATCH_WAIT_S
        messages.append(message)
    return messages


def _ack(client: aiomqtt.Client, messages: Sequence[aiomqtt.Message]) -> None:
    """Send the PUBACK of each message, in the order received (MQTT 5, 4.6)."""
    for message in messages:
        client._client.ack(message.mid, message.qos)


async def _handle(
    role: str,
    consumer: Consumer,
    messages: Sequence[aiomqtt.Message],
    stop: asyncio.Event,
    config: BusConfig,
) -> bool:
    """Hand the decoded messages to `consumer`, retrying while it raises.

    Return False when `stop` is set before the consumer succeeded; the
    messages then stay unacknowledged.
    """
    runs = _decode(messages)
    failures = 0
    while True:
        try:
            for fixes, events in runs:
                if fixes:
                    await consumer.handle(fixes)
                if events and isinstance(consumer, EventConsumer):
                    await consumer.handle_events(events)
            return True
        except Exception as exc:  # e.g. the store is down: keep the messages
            failures += 1
            delay = min(config.retry_max_s, 0.1 * 2.0**failures)
            log.error(
                "%s worker failed to handle %d messages (%d in a row), "
                "retrying in %.1f s: %r",
                role,
                len(messages),
                failures,
                delay,
                exc,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return False


def _decode(
    messages: Sequence[aiomqtt.Message],
) -> list[tuple[list[Fix], list[DeviceEvent]]]:
    """Decode messages into runs of fixes and runs of events, in arrival order.

    An invalid message is logged and dropped; it is acknowledged with the
    rest, because the broker would otherwise send it again forever.
    """
    runs: list[tuple[list[Fix], list[DeviceEvent]]] = []
    for message in messages:
        topic = message.topic.value
        try:
            payload = _payload_bytes(message.payload)
            if topic_kind(topic) == "events":
                event = decode_event(payload)
                if not runs or runs[-1][0]:
                    runs.append(([], []))
                runs[-1][1].append(event)
            else:
                fix = decode_fix(payload)
                if not runs or runs[-1][1]:
                    runs.append(([], []))
                runs[-1][0].append(fix)
        except PayloadError as exc:
            log.error("invalid message on %s dropped: %s", topic, exc)
    return runs


def _payload_bytes(payload: object) -> bytes | str:
    if isinstance(payload, bytes | str):
        return payload
    raise PayloadError(f"payload of type {type(payload).__name__} is not JSON text")
