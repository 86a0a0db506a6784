"""Trackers that speak MQTT: JSON positions in, downlink commands out.

A tracker publishes positions to ``postloan/v1/uplink/<device_id>``, one
position object (the fields of docs/mqtt.md, ``device_id`` optional) or a
JSON array of them, and publishes command responses to
``postloan/v1/uplink/<device_id>/response``. Queued commands of protocol
``mqtt`` go out on ``postloan/v1/downlink/<device_id>``, and a sent command
without a response after ``[gateway] command_timeout_s`` is marked
``timeout``, as for TCP devices. Both follow the store's command records, so
they hold across a gateway restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt

from postloan.bus.schema import (
    PREFIX,
    SCHEMA_VERSION,
    PayloadError,
    broker_address,
    decode_fix,
    downlink_topic,
)
from postloan.commands import command_expired
from postloan.config import Config
from postloan.model import Fix
from postloan.outage import OutageLog
from postloan.store import CommandNotFoundError, CommandTransitionError, Store
from postloan.times import format_time
from postloan.validation import InvalidFixError, check_device_id, check_fix

log = logging.getLogger(__name__)

PROTOCOL = "mqtt"
Submit = Callable[[Sequence[Fix]], "asyncio.Future[None] | None"]


class MqttDevices:
    """Store positions of MQTT trackers and send them their queued commands.

    NOTE: aiomqtt acknowledges a QoS 1 uplink message on receipt, before the
    store contains its fix, so a crash in between loses that fix.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        submit: Submit,
        *,
        poll_interval: float = 1.0,
        dropped: Counter[tuple[str, str]] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.submit = submit
        self.poll_interval = poll_interval
        self.fixes_received = 0
        # Rejected messages and positions. A rejected position counts once
        # here and once in `dropped`.
        self.rejected = 0
        # Rejected positions by (protocol, reason). Pass the gateway's
        # `stats.dropped` to export them as postloan_records_dropped.
        self.dropped: Counter[tuple[str, str]] = (
            Counter() if dropped is None else dropped
        )
        self.commands_sent = 0
        self.commands_timed_out = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Serve MQTT trackers until `stop`, reconnecting with capped back-off."""
        failures = 0
        while not stop.is_set():
            try:
                await self._serve(stop)
            except aiomqtt.MqttError as exc:
                failures += 1
                delay = min(self.config.bus.retry_max_s, 0.1 * 2.0**failures)
                delay *= 0.5 + random.random() / 2
                log.warning(
                    "MQTT device link failed (%d in a row), retrying in %.1f s: %s",
                    failures,
                    delay,
                    exc,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            else:
                failures = 0

    async def _serve(self, stop: asyncio.Event) -> None:
        host, port = broker_address(self.config.bus.url)
        async with aiomqtt.Client(
            host,
            port,
            identifier=f"{self.config.bus.client_id}-devices",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            await client.subscribe(f"{PREFIX}/uplink/+", qos=1)
            await client.subscribe(f"{PREFIX}/uplink/+/response", qos=1)
            tasks = [
                asyncio.create_task(self._receive(client)),
                asyncio.create_task(self._send_commands(client)),
                asyncio.create_task(stop.wait()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                task.result()

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            levels = message.topic.value.split("/")
            payload = message.payload
            if not isinstance(payload, bytes | str):
                continue
            try:
                if len(levels) == 4:
                    await self._positions(message.topic.value, levels[3], payload)
                elif len(levels) == 5 and levels[4] == "response":
                    await self._response(levels[3], payload)
            except PayloadError as exc:
                self.rejected += 1
                log.warning("invalid message on %s rejected: %s", message.topic, exc)

    async def _positions(
        self, topic: str, device_id: str, payload: bytes | str
    ) -> None:
        limit = datetime.now(UTC) + timedelta(seconds=self.config.devices.max_future_s)
        positions = parse_positions(device_id, payload, latest=limit)
        if positions.rejected:
            self._reject_positions(topic, positions)
        fixes = positions.fixes
        if not fixes:
            return
        self.fixes_received += len(fixes)
        submitted = self.submit(fixes)
        await asyncio.to_thread(
            self.store.touch_device, device_id, PROTOCOL, seen_at=datetime.now(UTC)
        )
        if submitted is not None:
            await submitted

    def _reject_positions(self, topic: str, positions: Positions) -> None:
        """Count the rejected positions of one message and log it in one line."""
        self.rejected += len(positions.rejected)
        for rejection in positions.rejected:
            self.dropped[(PROTOCOL, rejection.reason)] += 1
        first = positions.rejected[0]
        log.warning(
            "message on %s: %d of %d positions rejected, first at index %d: "
            "invalid %s %r (%s); the other positions are stored",
            topic,
            len(positions.rejected),
            len(positions.rejected) + len(positions.fixes),
            first.index,
            first.field,
            first.value,
            first.detail,
        )

    async def _response(self, device_id: str, payload: bytes | str) -> None:
        document = _object(payload)
        command_id = document.get("command_id")
        if not isinstance(command_id, int):
            raise PayloadError(f"response of device {device_id} has no command_id")
        try:
            await asyncio.to_thread(
                self.store.update_command,
                command_id,
                "answered",
                at=datetime.now(UTC),
                response=document,
            )
        except (CommandNotFoundError, CommandTransitionError) as exc:
            raise PayloadError(
                f"response of device {device_id} not recorded: {exc}"
            ) from exc
        log.info("command %d answered by MQTT device %s", command_id, device_id)

    async def _send_commands(self, client: aiomqtt.Client) -> None:
        outage = OutageLog(log, "MQTT command dispatch")
        while True:
            try:
                await self._send_queued(client)
                await self._expire_sent()
            except aiomqtt.MqttError:
                raise
            except Exception as exc:  # the store is down: keep polling
                outage.failed(exc)
            else:
                outage.succeeded()
            await asyncio.sleep(self.poll_interval)

    async def _send_queued(self, client: aiomqtt.Client) -> None:
        queued = await asyncio.to_thread(self.store.commands, None, "queued")
        now = datetime.now(UTC)
        for command in queued:
            # The gateway's command poll marks an expired command failed.
            if command.protocol != PROTOCOL or command_expired(command.payload, now):
                continue
            body = {
                "v": SCHEMA_VERSION,
                "command_id": command.command_id,
                "kind": command.kind,
                "payload": dict(command.payload),
            }
            # Marked sent first, so a fast response never races the update.
            await asyncio.to_thread(
                self.store.update_command,
                command.command_id,
                "sent",
                at=datetime.now(UTC),
            )
            await client.publish(
                downlink_topic(command.device_id), json.dumps(body), qos=1
            )
            log.info(
                "command %d (%s) sent to MQTT device %s",
                command.command_id,
                command.kind,
                command.device_id,
            )
            self.commands_sent += 1

    async def _expire_sent(self) -> None:
        """Mark MQTT commands sent over ``command_timeout_s`` ago ``timeout``."""
        sent = await asyncio.to_thread(self.store.commands, None, "sent")
        timeout = timedelta(seconds=self.config.gateway.command_timeout_s)
        now = datetime.now(UTC)
        for command in sent:
            sent_at = command.sent_at or command.updated_at
            if command.protocol != PROTOCOL or now - sent_at < timeout:
                continue
            try:
                await asyncio.to_thread(
                    self.store.update_command, command.command_id, "timeout", at=now
                )
            except CommandTransitionError:
                continue  # the response arrived after the read
            self.commands_timed_out += 1
            log.warning(
                "command %d (%s) to MQTT device %s timed out after %.0f s",
                command.command_id,
                command.kind,
                command.device_id,
                timeout.total_seconds(),
            )


@dataclass(frozen=True, slots=True)
class RejectedPosition:
    """One position of an uplink message that is not stored, and why."""

    index: int
    field: str
    value: object
    detail: str

    @property
    def reason(self) -> str:
        """The label of postloan_records_dropped: ``invalid_<field>``."""
        return f"invalid_{self.field}"


@dataclass(slots=True)
class Positions:
    """The accepted fixes and the rejected positions of one uplink message."""

    fixes: list[Fix] = field(default_factory=list)
    rejected: list[RejectedPosition] = field(default_factory=list)


def parse_positions(
    device_id: str, payload: bytes | str, *, latest: datetime | None = None
) -> Positions:
    """Parse one position object or an array of them sent by `device_id`.

    Each position passes `postloan.validation.check_fix`, the check of the TCP
    gateway, and a position dated after `latest` is rejected. A bad position
    of an array is rejected alone. An invalid topic device id or a payload
    that is not JSON rejects the whole message (every position, index 0).
    """
    try:
        check_device_id(device_id)
    except InvalidFixError as exc:
        return _rejected_message("device_id", device_id, str(exc))
    try:
        document: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        return _rejected_message("payload", _excerpt(payload), f"not JSON: {exc}")
    items = document if isinstance(document, list) else [document]
    positions = Positions()
    for index, item in enumerate(items):
        try:
            fix = _position(device_id, item)
            check_fix(fix)
        except InvalidFixError as exc:
            rejection = RejectedPosition(index, exc.field, exc.value, str(exc))
            positions.rejected.append(rejection)
            continue
        if latest is not None and fix.time > latest:
            detail = f"dated after {format_time(latest)}"
            rejection = RejectedPosition(index, "time", format_time(fix.time), detail)
            positions.rejected.append(rejection)
            continue
        positions.fixes.append(fix)
    return positions


def _position(device_id: str, item: Any) -> Fix:
    """Decode one position object of `device_id`; raises InvalidFixError."""
    if not isinstance(item, dict):
        raise InvalidFixError("position", item, "a JSON object")
    named = item.setdefault("device_id", device_id)
    if named != device_id:
        raise InvalidFixError("device_id", named, f"{device_id!r}, as in the topic")
    try:
        return decode_fix(json.dumps(item))
    except PayloadError as exc:
        raise InvalidFixError("position", _excerpt(json.dumps(item)), str(exc)) from exc


def _rejected_message(field_name: str, value: object, detail: str) -> Positions:
    return Positions(rejected=[RejectedPosition(0, field_name, value, detail)])


def _excerpt(payload: bytes | str, size: int = 200) -> str:
    text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
    return text if len(text) <= size else text[:size] + "..."


def _object(payload: bytes | str) -> dict[str, Any]:
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"payload is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise PayloadError("payload is not a JSON object")
    return document
